#!/usr/bin/env bash
# Role: make a Helm v3 binary available and print its absolute path on stdout (nothing else).
#
# Resolution order (gitops/helm.py:find_helm uses the same one):
#   1. $DBAAS_HELM, if set (must be an executable Helm v3);
#   2. `helm` on PATH, if it is Helm v3;
#   3. <repo>/.tools/bin/helm, linked to the per-user tool cache
#      (${DBAAS_TOOLS_CACHE:-~/.cache/dbaas/tools}/helm-<version>, shared by every clone of the same user)
#      or built there with `go install` when missing or not the pinned version.
# Progress goes to stderr so callers can do `HELM=$(deploy/scripts/ensure-helm.sh)`.
# Idempotent: once the pinned binary exists, a run builds nothing and takes well under a second.
set -euo pipefail

HELM_MODULE="helm.sh/helm/v3"
# Pinned release; `go list -m -versions helm.sh/helm/v3` lists what the module proxy serves.
HELM_VERSION="${DBAAS_HELM_VERSION:-v3.22.0}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools_bin="${repo_root}/.tools/bin"
target="${tools_bin}/helm"

log() { printf 'ensure-helm: %s\n' "$*" >&2; }
die() { printf 'ensure-helm: error: %s\n' "$*" >&2; exit 1; }

helm_version() { "$1" version --template '{{.Version}}' 2>/dev/null; }
is_helm_v3() { local v; v="$(helm_version "$1")" && [[ "${v}" == v3.* ]]; }

if [[ -n "${DBAAS_HELM:-}" ]]; then
  [[ -x "${DBAAS_HELM}" ]] || die "DBAAS_HELM=${DBAAS_HELM} is not an executable file"
  is_helm_v3 "${DBAAS_HELM}" \
    || die "DBAAS_HELM=${DBAAS_HELM} is not Helm v3 (it reports: $(helm_version "${DBAAS_HELM}" || echo 'no version'))"
  printf '%s\n' "${DBAAS_HELM}"
  exit 0
fi

if on_path="$(command -v helm 2>/dev/null)"; then
  if is_helm_v3 "${on_path}"; then
    printf '%s\n' "${on_path}"
    exit 0
  fi
  log "ignoring ${on_path}: it is not Helm v3 ($(helm_version "${on_path}" || echo 'no version'))"
fi

cache="${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/dbaas/tools}"
cached="${cache}/helm-${HELM_VERSION}"
if [[ -x "${target}" ]] && [[ "$(helm_version "${target}" || true)" == "${HELM_VERSION}" ]]; then
  if [[ ! -x "${cached}" ]]; then  # a binary built before the cache existed: share it with other clones
    mkdir -p "${cache}" && cp "$(readlink -f "${target}")" "${cached}.tmp" && mv -f "${cached}.tmp" "${cached}"
  fi
  printf '%s\n' "${target}"
  exit 0
fi

if [[ -x "${cached}" ]] && [[ "$(helm_version "${cached}" || true)" == "${HELM_VERSION}" ]]; then
  mkdir -p "${tools_bin}"
  ln -sfn "${cached}" "${target}"
  printf '%s\n' "${target}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no Helm v3 found (DBAAS_HELM is unset, no helm v3 on PATH, \
no ${target}) and Go is not installed to build one. Install Go >= 1.26 (https://go.dev/dl/) and \
re-run this script, or install Helm v3 (https://helm.sh/docs/intro/install/), or set DBAAS_HELM=/path/to/helm."

start=${SECONDS}
log "fetching ${HELM_MODULE}@${HELM_VERSION} metadata"
# Stamp the binary like upstream's Makefile does: its own version, and the Kubernetes version
# (.Capabilities.KubeVersion, lint deprecation checks) from the k8s.io/client-go it is built with;
# without these `helm version` says "v3.22" and templates see Kubernetes v1.20.
if ! info="$(go mod download -json "${HELM_MODULE}@${HELM_VERSION}" 2>&1)"; then
  reason="$(printf '%s\n' "${info}" | sed -n 's/^[[:space:]]*"Error": "\(.*\)"$/\1/p')"
  die "cannot download ${HELM_MODULE}@${HELM_VERSION} from the Go module proxy ($(go env GOPROXY)): ${reason:-${info}}"
fi
gomod="$(printf '%s\n' "${info}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "${gomod}" ]] || die "go mod download gave no go.mod for ${HELM_MODULE}@${HELM_VERSION}"
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "${gomod}")"   # e.g. v0.37.0
[[ "${client_go}" =~ ^v0\.([0-9]+)\. ]] || die "cannot read the k8s.io/client-go version from ${gomod}"
k8s_minor="${BASH_REMATCH[1]}"
ldflags="-w -s -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done

mkdir -p "${tools_bin}"
log "building ${HELM_MODULE}/cmd/helm@${HELM_VERSION} (Kubernetes 1.${k8s_minor}) into ${tools_bin} with $(go version | cut -d' ' -f3); the first build takes a few minutes"
CGO_ENABLED=0 GOBIN="${tools_bin}" go install -trimpath -ldflags "${ldflags}" \
  "${HELM_MODULE}/cmd/helm@${HELM_VERSION}" >&2 \
  || die "go install ${HELM_MODULE}/cmd/helm@${HELM_VERSION} failed (Go output above)"
built="$(helm_version "${target}" || true)"
[[ "${built}" == "${HELM_VERSION}" ]] || die "built ${target} but it reports version '${built}', not ${HELM_VERSION}"
mkdir -p "${cache}"
cp "${target}" "${cached}.tmp" && mv -f "${cached}.tmp" "${cached}"
log "built helm ${built} in $(( SECONDS - start ))s (cached as ${cached})"
printf '%s\n' "${target}"
