#!/usr/bin/env bash
# Role: make a Jaeger all-in-one binary (`cmd/jaeger`) available and print its absolute path on
# stdout (nothing else).
#
# Resolution order (deploy/stack/tracing.py:find_jaeger uses the same one):
#   1. $DBAAS_JAEGER, if set (must be an executable that answers `jaeger version`);
#   2. the per-user tool cache, ${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbaas/tools}/jaeger-<version>,
#      built here from the Go module proxy when missing.
# No `jaeger` on PATH is taken: the launcher writes a configuration for this version's format.
# The cache lives outside the repository on purpose: every clone and worktree of the same user
# (and CI's fresh clones) shares one build, keyed by the pinned version, and nothing is written
# into the checkout.
#
# The pinned version is the one required by deploy/tools/jaeger/go.mod. Jaeger's own go.mod has a
# `replace` directive, which `go install module@version` refuses, so the binary is built from that
# small wrapper module (copied into the cache with its go.sum, then `go build`).
# Progress goes to stderr so callers can do `JAEGER=$(deploy/scripts/ensure-jaeger.sh)`.
# Idempotent: once the pinned binary exists, a run builds nothing and takes well under a second.
# Concurrent runs wait for one build (flock).
set -euo pipefail

JAEGER_MODULE="github.com/jaegertracing/jaeger"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
wrapper="${repo_root}/deploy/tools/jaeger"

log() { printf 'ensure-jaeger: %s\n' "$*" >&2; }
die() { printf 'ensure-jaeger: error: %s\n' "$*" >&2; exit 1; }

is_jaeger() { "$1" version 2>/dev/null | grep -q 'gitVersion'; }

if [[ -n "${DBAAS_JAEGER:-}" ]]; then
  [[ -x "${DBAAS_JAEGER}" ]] || die "DBAAS_JAEGER=${DBAAS_JAEGER} is not an executable file"
  is_jaeger "${DBAAS_JAEGER}" || die "DBAAS_JAEGER=${DBAAS_JAEGER} does not answer \`jaeger version\`"
  printf '%s\n' "${DBAAS_JAEGER}"
  exit 0
fi

[[ -f "${wrapper}/go.mod" ]] || die "missing ${wrapper}/go.mod"
JAEGER_VERSION="$(awk -v m="${JAEGER_MODULE}" '($1 == m) { print $2; exit } ($1 == "require" && $2 == m) { print $3; exit }' "${wrapper}/go.mod")"
[[ -n "${JAEGER_VERSION}" ]] || die "cannot read the ${JAEGER_MODULE} version from ${wrapper}/go.mod"

cache="${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/dbaas/tools}"
target="${cache}/jaeger-${JAEGER_VERSION}"

if [[ -x "${target}" ]]; then
  printf '%s\n' "${target}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Jaeger found (DBAAS_JAEGER is unset, no ${target}) and Go is \
not installed to build one. Install Go >= 1.24 (https://go.dev/dl/) and re-run this script, or set \
DBAAS_JAEGER=/path/to/jaeger (the all-in-one binary of Jaeger ${JAEGER_VERSION})."

mkdir -p "${cache}"
exec 9>"${target}.lock"
if ! flock -n 9; then
  log "another build of jaeger ${JAEGER_VERSION} is running; waiting for it"
  flock 9
fi
if [[ -x "${target}" ]]; then   # built by the run we waited for
  printf '%s\n' "${target}"
  exit 0
fi

start=${SECONDS}
build="${cache}/build-jaeger-${JAEGER_VERSION}"
rm -rf "${build}"
mkdir -p "${build}"
cp "${wrapper}/go.mod" "${wrapper}/tools.go" "${build}/"
[[ -f "${wrapper}/go.sum" ]] && cp "${wrapper}/go.sum" "${build}/"
log "building ${JAEGER_MODULE}/cmd/jaeger@${JAEGER_VERSION} into ${target} with $(go version | cut -d' ' -f3); \
the first build takes several minutes of CPU"
(
  cd "${build}"
  export GOFLAGS="-mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0
  go mod tidy >&2 || die "go mod tidy of the Jaeger wrapper module failed (Go output above; \
the module proxy is $(go env GOPROXY))"
  nice -n 10 go build -trimpath \
    -ldflags "-s -w -X ${JAEGER_MODULE}/internal/version.latestVersion=${JAEGER_VERSION}" \
    -o "${build}/jaeger" "${JAEGER_MODULE}/cmd/jaeger" >&2 \
    || die "go build ${JAEGER_MODULE}/cmd/jaeger@${JAEGER_VERSION} failed (Go output above)"
)
is_jaeger "${build}/jaeger" || die "built ${build}/jaeger but it does not answer \`jaeger version\`"
mv -f "${build}/jaeger" "${target}"
rm -rf "${build}"
log "built jaeger ${JAEGER_VERSION} in $(( SECONDS - start ))s"
printf '%s\n' "${target}"
