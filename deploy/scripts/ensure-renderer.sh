#!/usr/bin/env bash
# Role: make the saga's chart renderer (deploy/tools/renderer: Helm's own packages in one
# long-lived process, rendering like `helm template`) available and print its absolute path on
# stdout (nothing else).
#
# Resolution order (gitops/helm.py:find_renderer uses the same one):
#   1. $DBAAS_RENDERER, if set (must be an executable that answers `renderer version`);
#   2. the per-user tool cache, ${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbaas/tools}/renderer-<helm version>-<source hash>,
#      built here from deploy/tools/renderer with the Go module proxy when missing.
# The cache lives outside the repository, like helm's and Jaeger's: every clone and worktree of the
# same user shares one build, keyed by the Helm version and a hash of the wrapper's sources (a
# changed main.go is a new build).
#
# It is built with the -ldflags deploy/scripts/ensure-helm.sh builds helm with (Helm's version, and
# the Kubernetes version of .Capabilities from the k8s.io/client-go Helm requires), so both render
# the same bytes; tests/gitops/test_renderer.py compares them.
# Progress goes to stderr so callers can do `RENDERER=$(deploy/scripts/ensure-renderer.sh)`.
# Idempotent: once the build exists, a run builds nothing. Concurrent runs wait for one build (flock).
set -euo pipefail

HELM_MODULE="helm.sh/helm/v3"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
wrapper="${repo_root}/deploy/tools/renderer"

log() { printf 'ensure-renderer: %s\n' "$*" >&2; }
die() { printf 'ensure-renderer: error: %s\n' "$*" >&2; exit 1; }

is_renderer() { "$1" version 2>/dev/null | grep -q '^v3\.'; }

if [[ -n "${DBAAS_RENDERER:-}" ]]; then
  [[ -x "${DBAAS_RENDERER}" ]] || die "DBAAS_RENDERER=${DBAAS_RENDERER} is not an executable file"
  is_renderer "${DBAAS_RENDERER}" || die "DBAAS_RENDERER=${DBAAS_RENDERER} does not answer \`renderer version\`"
  printf '%s\n' "${DBAAS_RENDERER}"
  exit 0
fi

[[ -f "${wrapper}/go.mod" && -f "${wrapper}/main.go" ]] || die "missing ${wrapper}/go.mod or main.go"
HELM_VERSION="$(awk -v m="${HELM_MODULE}" '($1 == m) { print $2; exit } ($1 == "require" && $2 == m) { print $3; exit }' "${wrapper}/go.mod")"
[[ -n "${HELM_VERSION}" ]] || die "cannot read the ${HELM_MODULE} version from ${wrapper}/go.mod"
[[ -f "${wrapper}/go.sum" ]] || die "missing ${wrapper}/go.sum (run \`go mod tidy\` in ${wrapper})"
digest="$(cat "${wrapper}/go.mod" "${wrapper}/go.sum" "${wrapper}/main.go" | sha256sum | cut -c1-12)"

cache="${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/dbaas/tools}"
target="${cache}/renderer-${HELM_VERSION}-${digest}"

if [[ -x "${target}" ]]; then
  printf '%s\n' "${target}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no chart renderer found (DBAAS_RENDERER is unset, no ${target}) \
and Go is not installed to build one. Install Go >= 1.26 (https://go.dev/dl/) and re-run this script, \
or set DBAAS_RENDERER=/path/to/renderer (built from deploy/tools/renderer)."

mkdir -p "${cache}"
exec 9>"${target}.lock"
if ! flock -n 9; then
  log "another build of the renderer is running; waiting for it"
  flock 9
fi
if [[ -x "${target}" ]]; then   # built by the run we waited for
  printf '%s\n' "${target}"
  exit 0
fi

start=${SECONDS}
build="${cache}/build-renderer-${HELM_VERSION}-${digest}"
rm -rf "${build}"
mkdir -p "${build}"
cp "${wrapper}/go.mod" "${wrapper}/main.go" "${build}/"
cp "${wrapper}/go.sum" "${build}/"
log "building the chart renderer with ${HELM_MODULE}@${HELM_VERSION} into ${target} with $(go version | cut -d' ' -f3); \
the first build takes a few minutes of CPU"
(
  cd "${build}"
  export GOFLAGS="-mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0
  go mod tidy >&2 || die "go mod tidy of the renderer module failed (Go output above; \
the module proxy is $(go env GOPROXY))"
  # The ldflags of ensure-helm.sh: Helm's version, and the Kubernetes version of its client-go.
  gomod="$(go list -m -f '{{.GoMod}}' "${HELM_MODULE}")"
  client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "${gomod}")"
  [[ "${client_go}" =~ ^v0\.([0-9]+)\. ]] || die "cannot read the k8s.io/client-go version from ${gomod}"
  k8s_minor="${BASH_REMATCH[1]}"
  ldflags="-w -s -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
  done
  nice -n 10 go build -trimpath -ldflags "${ldflags}" -o "${build}/renderer" . >&2 \
    || die "go build of the renderer failed (Go output above)"
)
is_renderer "${build}/renderer" || die "built ${build}/renderer but it does not answer \`renderer version\`"
mv -f "${build}/renderer" "${target}"
rm -rf "${build}"
log "built the renderer (Helm ${HELM_VERSION}) in $(( SECONDS - start ))s"
printf '%s\n' "${target}"
