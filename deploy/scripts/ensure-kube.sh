#!/usr/bin/env bash
# Role: make kube-apiserver and etcd available for the local stand-in of a Kubernetes PoP and print
# their absolute paths on stdout, one a line, in the order asked (nothing else).
#
# Usage: ensure-kube.sh [kube-apiserver] [etcd]      (no argument: both, kube-apiserver first)
#
# Resolution order per tool (deploy/stack/kube.py:find_tool uses the same one):
#   1. $DBAAS_KUBE_APISERVER / $DBAAS_ETCD, if set (must be an executable file);
#   2. the per-user tool cache, ${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbaas/tools}/
#      kube-apiserver-<version> and etcd-<version>, built here from the Go module proxy when missing.
# A binary of that name on PATH is not used: its version would be whatever it is, and the CRDs,
# the operator and the tests are checked against the pinned ones.
# The cache lives outside the repository on purpose: every clone and worktree of the same user
# (and CI's fresh clones) shares one build, keyed by the pinned version, and nothing is written
# into the checkout.
#
# The pinned versions are the ones required by deploy/tools/kubernetes/go.mod (k8s.io/kubernetes)
# and deploy/tools/etcd/go.mod (go.etcd.io/etcd/server/v3). Both upstream modules have `replace`
# directives, which `go install module@version` refuses, so each binary is built from its small
# wrapper module (copied into the cache with its go.sum, then `go build`).
# Progress goes to stderr. Idempotent: once the pinned binaries exist, a run builds nothing and
# takes well under a second. A cold build of both takes 10 to 25 minutes on two cores; concurrent
# runs wait for one build (flock per tool).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { printf 'ensure-kube: %s\n' "$*" >&2; }
die() { printf 'ensure-kube: error: %s\n' "$*" >&2; exit 1; }

# tool -> wrapper folder, pinned module, package to build, override variable, version probe
declare -A WRAPPER=([kube-apiserver]=kubernetes [etcd]=etcd)
declare -A MODULE=([kube-apiserver]=k8s.io/kubernetes [etcd]=go.etcd.io/etcd/server/v3)
declare -A PACKAGE=([kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver [etcd]=go.etcd.io/etcd/server/v3)
declare -A OVERRIDE=([kube-apiserver]=DBAAS_KUBE_APISERVER [etcd]=DBAAS_ETCD)

answers_version() {  # read whole first: grep -q closing the pipe early would fail it under pipefail
  local out
  out="$("$1" --version 2>/dev/null)" || return 1
  grep -qiE 'kubernetes v|etcd version' <<<"${out}"
}

pinned_version() {  # the version of $2 that wrapper $1's go.mod requires
  awk -v m="$2" '($1 == m) { print $2; exit } ($1 == "require" && $2 == m) { print $3; exit }' \
    "${repo_root}/deploy/tools/$1/go.mod"
}

cache="${DBAAS_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/dbaas/tools}"

ensure() {
  local tool="$1" var="${OVERRIDE[$1]}" wrapper="${repo_root}/deploy/tools/${WRAPPER[$1]}"
  if [[ -n "${!var:-}" ]]; then
    [[ -x "${!var}" ]] || die "${var}=${!var} is not an executable file"
    printf '%s\n' "${!var}"
    return
  fi
  [[ -f "${wrapper}/go.mod" ]] || die "missing ${wrapper}/go.mod"
  local version
  version="$(pinned_version "${WRAPPER[$tool]}" "${MODULE[$tool]}")"
  [[ -n "${version}" ]] || die "cannot read the ${MODULE[$tool]} version from ${wrapper}/go.mod"
  local target="${cache}/${tool}-${version}"
  if [[ -x "${target}" ]]; then
    printf '%s\n' "${target}"
    return
  fi
  command -v go >/dev/null 2>&1 || die "no ${tool} found (${var} is unset, no ${target}) and Go is not \
installed to build one. Install Go >= 1.26 (https://go.dev/dl/) and re-run this script, or set ${var}."
  mkdir -p "${cache}"
  exec 9>"${target}.lock"
  if ! flock -n 9; then
    log "another build of ${tool} ${version} is running; waiting for it"
    flock 9
  fi
  if [[ -x "${target}" ]]; then   # built by the run we waited for
    exec 9>&-
    printf '%s\n' "${target}"
    return
  fi
  local start=${SECONDS} build="${cache}/build-${tool}-${version}"
  rm -rf "${build}"
  mkdir -p "${build}"
  cp "${wrapper}/go.mod" "${wrapper}/tools.go" "${build}/"
  [[ -f "${wrapper}/go.sum" ]] && cp "${wrapper}/go.sum" "${build}/"
  log "building ${PACKAGE[$tool]}@${version} into ${target} with $(go version | cut -d' ' -f3)"
  (
    cd "${build}"
    export GOFLAGS="-mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0
    go mod tidy >&2 || die "go mod tidy of the ${tool} wrapper module failed (Go output above; \
the module proxy is $(go env GOPROXY))"
    ldflags="-s -w"
    if [[ "${tool}" == kube-apiserver ]]; then  # what /version and --version answer (as upstream's build sets)
      minor="${version#v*.}"; minor="${minor%%.*}"
      ldflags+=" -X k8s.io/component-base/version.gitVersion=${version} -X k8s.io/component-base/version.gitMajor=1"
      ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
    fi
    nice -n 10 go build -trimpath -ldflags "${ldflags}" -o "${build}/${tool}" "${PACKAGE[$tool]}" >&2 \
      || die "go build ${PACKAGE[$tool]}@${version} failed (Go output above)"
  )
  answers_version "${build}/${tool}" || die "built ${build}/${tool} but it does not answer \`--version\`"
  mv -f "${build}/${tool}" "${target}"
  rm -rf "${build}"
  exec 9>&-
  log "built $("${target}" --version 2>/dev/null | head -n1) in $(( SECONDS - start ))s"
  printf '%s\n' "${target}"
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(kube-apiserver etcd)
for tool in "${tools[@]}"; do
  [[ -n "${WRAPPER[$tool]:-}" ]] || die "unknown tool ${tool}: kube-apiserver or etcd"
  ensure "${tool}"
done
