#!/usr/bin/env bash
# Builds the third-party test peers the Kubernetes tests run against: a real
# kube-apiserver and the etcd it stores into. Go is on the machine only for
# this; the binaries go to a cache directory OUTSIDE the repo and are never
# committed. Idempotent: a pinned binary already in the cache is not rebuilt.
#
#   bash scripts/k8s-fixtures.sh            # build what is missing
#   COUCHESTOR_FIXTURES_DIR=/some/dir bash scripts/k8s-fixtures.sh
#
# Pins:
# - kube-apiserver v1.37.2: the newest stable Kubernetes release on the module
#   proxy; its go.mod says go 1.26.0, which the installed Go builds.
# - etcd v3.7.3: Kubernetes 1.37's kubeadm runs etcd 3.7 (DefaultEtcdVersion
#   3.7.0); v3.7.3 is that line's newest patch. Debian's etcd-server is 3.4.23,
#   older than what a 1.37 apiserver is tested with, so etcd is built too.
#
# Neither project can be `go install`ed at a version (their go.mod files
# replace sibling modules with ./staging or ../ paths), so each is built from a
# throwaway module in a temp dir that requires the pinned version and replaces
# those siblings with the published modules of the same release.
set -euo pipefail

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
DIR=${COUCHESTOR_FIXTURES_DIR:-/var/cache/couchestor-fixtures}

# Cheaper builds: no cgo (static binaries, no C toolchain), no debug info or
# symbol table, no VCS stamping.
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
LDFLAGS_BASE="-s -w"

# Both go.mod files say go 1.26.0. A Go >= 1.21 that is older fetches the 1.26
# toolchain from the module proxy by itself (GOTOOLCHAIN=auto); Debian's
# golang-go (1.19) cannot, so it is not used.
need_go() {
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH=/usr/local/go/bin:$PATH; fi
  if ! command -v go >/dev/null; then
    echo "k8s-fixtures: no Go toolchain: install Go >= 1.21 (https://go.dev/dl, e.g. into /usr/local/go)" >&2
    exit 1
  fi
  local v
  v=$(go env GOVERSION)
  if [[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] < 21)); then
    echo "k8s-fixtures: $v is too old to fetch the Go 1.26 toolchain these builds need: install Go >= 1.21" >&2
    exit 1
  fi
}

mkdir -p "$DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

stamp_ok() { # name version: the binary exists and was built from this pin
  [[ -x "$DIR/$1" && -f "$DIR/$1.version" && "$(cat "$DIR/$1.version")" == "$2" ]]
}

build_kube_apiserver() {
  local minor=${K8S_VERSION#v1.} mod dir
  local staging_version=v0.${minor}
  mod="$work/kube-apiserver"
  mkdir -p "$mod"
  cd "$mod"
  go mod init couchestor.local/k8s-fixture >/dev/null 2>&1
  # The kubernetes go.mod: every staging module it replaces with
  # ./staging/src/k8s.io/X becomes k8s.io/X at the matching v0.Y.Z; any other
  # replace is copied as it is.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo "replace ("
    awk '/^replace *\(/{r=1;next} r&&/^\)/{r=0} r&&/=>/{print}' "$gomod" |
      while read -r from _arrow to rest; do
        if [[ $to == ./staging/* ]]; then
          echo "	$from => $from $staging_version"
        else
          echo "	$from => $to $rest"
        fi
      done
    echo ")"
    grep '^godebug ' "$gomod" || true
  } >>go.mod
  go mod download k8s.io/kubernetes
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >/dev/null
  local v=k8s.io/component-base/version
  go build -trimpath -o "$DIR/kube-apiserver.tmp" \
    -ldflags "$LDFLAGS_BASE -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*} -X $v.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver
  mv "$DIR/kube-apiserver.tmp" "$DIR/kube-apiserver"
  echo "$K8S_VERSION" >"$DIR/kube-apiserver.version"
}

build_etcd() {
  local mod="$work/etcd" m
  mkdir -p "$mod"
  cd "$mod"
  go mod init couchestor.local/etcd-fixture >/dev/null 2>&1
  {
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo "replace ("
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      echo "	go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION"
    done
    echo ")"
  } >>go.mod
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  local v=go.etcd.io/etcd/api/v3/version
  go build -trimpath -o "$DIR/etcd.tmp" -ldflags "$LDFLAGS_BASE -X $v.GitSHA=${ETCD_VERSION}" \
    go.etcd.io/etcd/server/v3
  mv "$DIR/etcd.tmp" "$DIR/etcd"
  echo "$ETCD_VERSION" >"$DIR/etcd.version"
}

built() { # name version function
  if stamp_ok "$1" "$2"; then
    echo "k8s-fixtures: $DIR/$1 $2 already built"
    return
  fi
  need_go
  local t0=$SECONDS
  echo "k8s-fixtures: building $1 $2 into $DIR ..."
  "$3"
  echo "k8s-fixtures: built $1 $2 in $((SECONDS - t0)) s"
}

built etcd "$ETCD_VERSION" build_etcd
built kube-apiserver "$K8S_VERSION" build_kube_apiserver
