#!/usr/bin/env bash
# Builds the real control plane the tests run against from the Kubernetes Go modules
# (tests/cluster/go.mod): kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (all
# k8s.io/kubernetes v1.37.2), etcd (go.etcd.io/etcd/server/v3) and helm (helm.sh/helm/v4).
# Output: $TUNIX_CLUSTER_BIN (default .cache/cluster-bin), with a stamp naming the go.mod it was built
# from, so a warm call returns at once. Cold: ~23 min on 2 cores (docs/TESTING.md); warm: under a second.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${TUNIX_CLUSTER_BIN:-$root/.cache/cluster-bin}"
mod="$root/tests/cluster"
stamp="$out/.built-from"
want="$(cat "$mod/go.mod" "$mod/go.sum" "$0" "$mod"/cmd/*/*.go | sha256sum | cut -d' ' -f1)"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || { rm -f "$stamp"; break; }; done
  [[ -f "$stamp" ]] && exit 0
fi
command -v go >/dev/null || { echo "build_cluster: Go >= 1.26 is required (https://go.dev/dl)" >&2; exit 1; }
echo "build_cluster: building the control plane into $out (first build: about 25 minutes on 2 cores;" \
     "later builds reuse ~/.cache/go-build and take seconds)" >&2
start=$SECONDS
mkdir -p "$out"
v=v1.37.2
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=37 -X $pkg.gitTreeState=clean"
done
cd "$mod"
GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl helm.sh/helm/v4/cmd/helm ./cmd/etcd
echo "$want" > "$stamp"
echo "build_cluster: built ${bins[*]} in $((SECONDS - start)) s" >&2
