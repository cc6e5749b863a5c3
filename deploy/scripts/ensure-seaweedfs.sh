#!/usr/bin/env bash
# Role: make a SeaweedFS `weed` binary available and print its absolute path on stdout (nothing else).
#
# Resolution order (deploy/stack/components.py:find_weed uses the same one):
#   1. $DBAAS_WEED, if set (must be an executable `weed`);
#   2. `weed` on PATH, if it is SeaweedFS;
#   3. the per-user tool cache, ${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbaas/tools}/weed-<version>,
#      built here from the Go module proxy when missing.
# The cache lives outside the repository on purpose: every clone and worktree of the same user
# (and CI's fresh clones) shares one build, keyed by the pinned version, and nothing is written
# into the checkout.
#
# The pinned version is the one required by deploy/tools/seaweedfs/go.mod. SeaweedFS's own go.mod
# has a `replace` directive, which `go install module@version` refuses, so the binary is built from
# that small wrapper module (copied into the cache with its go.sum, then `go build`).
# Progress goes to stderr so callers can do `WEED=$(deploy/scripts/ensure-seaweedfs.sh)`.
# Idempotent: once the pinned binary exists, a run builds nothing and takes well under a second.
# A cold build takes about 20 minutes of CPU; concurrent runs wait for one build (flock).
set -euo pipefail

WEED_MODULE="github.com/seaweedfs/seaweedfs"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
wrapper="${repo_root}/deploy/tools/seaweedfs"

log() { printf 'ensure-seaweedfs: %s\n' "$*" >&2; }
die() { printf 'ensure-seaweedfs: error: %s\n' "$*" >&2; exit 1; }

is_weed() { "$1" version 2>/dev/null | grep -qi 'version'; }

if [[ -n "${DBAAS_WEED:-}" ]]; then
  [[ -x "${DBAAS_WEED}" ]] || die "DBAAS_WEED=${DBAAS_WEED} is not an executable file"
  is_weed "${DBAAS_WEED}" || die "DBAAS_WEED=${DBAAS_WEED} does not answer \`weed version\`"
  printf '%s\n' "${DBAAS_WEED}"
  exit 0
fi

if on_path="$(command -v weed 2>/dev/null)"; then
  if is_weed "${on_path}"; then
    printf '%s\n' "${on_path}"
    exit 0
  fi
  log "ignoring ${on_path}: it does not answer \`weed version\`"
fi

[[ -f "${wrapper}/go.mod" ]] || die "missing ${wrapper}/go.mod"
WEED_VERSION="$(awk -v m="${WEED_MODULE}" '($1 == m) { print $2; exit } ($1 == "require" && $2 == m) { print $3; exit }' "${wrapper}/go.mod")"
[[ -n "${WEED_VERSION}" ]] || die "cannot read the ${WEED_MODULE} version from ${wrapper}/go.mod"

cache="${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/dbaas/tools}"
target="${cache}/weed-${WEED_VERSION}"

if [[ -x "${target}" ]]; then
  printf '%s\n' "${target}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "no SeaweedFS found (DBAAS_WEED is unset, no weed on PATH, \
no ${target}) and Go is not installed to build one. Install Go >= 1.26 (https://go.dev/dl/) and \
re-run this script, or set DBAAS_WEED=/path/to/weed."

mkdir -p "${cache}"
exec 9>"${target}.lock"
if ! flock -n 9; then
  log "another build of weed ${WEED_VERSION} is running; waiting for it"
  flock 9
fi
if [[ -x "${target}" ]]; then   # built by the run we waited for
  printf '%s\n' "${target}"
  exit 0
fi

start=${SECONDS}
build="${cache}/build-weed-${WEED_VERSION}"
rm -rf "${build}"
mkdir -p "${build}"
cp "${wrapper}/go.mod" "${wrapper}/tools.go" "${build}/"
[[ -f "${wrapper}/go.sum" ]] && cp "${wrapper}/go.sum" "${build}/"
log "building ${WEED_MODULE}/weed@${WEED_VERSION} into ${target} with $(go version | cut -d' ' -f3); \
the first build takes about 20 minutes of CPU"
(
  cd "${build}"
  export GOFLAGS="-mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0
  go mod tidy >&2 || die "go mod tidy of the SeaweedFS wrapper module failed (Go output above; \
the module proxy is $(go env GOPROXY))"
  nice -n 10 go build -trimpath -ldflags "-s -w" -o "${build}/weed" "${WEED_MODULE}/weed" >&2 \
    || die "go build ${WEED_MODULE}/weed@${WEED_VERSION} failed (Go output above)"
)
is_weed "${build}/weed" || die "built ${build}/weed but it does not answer \`weed version\`"
mv -f "${build}/weed" "${target}"
rm -rf "${build}"
log "built $("${target}" version 2>/dev/null | head -n1) in $(( SECONDS - start ))s"
printf '%s\n' "${target}"
