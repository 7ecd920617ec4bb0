#!/usr/bin/env bash
# fetch-containerd.sh: build the pinned containerd toolchains the shim's
# integration tests run against, once, into .cache/containerd/<version>/bin.
#
# The versions are pinned by the tool modules under internal/tools
# (containerd24, containerd23, crictl: go.mod `tool` directives + go.sum),
# so the sources come from the Go module proxy and are checked by go.sum.
# A toolchain whose binaries are all present is skipped; delete its
# directory to rebuild. Builds run under `nice -n 19` (shared CI machines).
#
# Usage: scripts/fetch-containerd.sh [24|23|crictl ...]   (default: all)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/local/go/bin:$PATH
export CGO_ENABLED=${CGO_ENABLED:-0}
cache=$root/.cache/containerd

# version MODDIR MODULE: the version of MODULE that MODDIR's go.mod pins.
version() {
	(cd "$root/$1" && go list -m -f '{{.Version}}' "$2")
}

# build MODDIR OUTDIR PKG...: build each tool package of MODDIR into OUTDIR,
# unless every binary is already there.
build() {
	local moddir=$1 out=$2; shift 2
	local missing=()
	for p in "$@"; do
		[ -x "$out/$(basename "$p")" ] || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		echo "fetch-containerd: $out is complete, skipping"
		return
	fi
	mkdir -p "$out"
	local start=$SECONDS
	echo "fetch-containerd: building ${missing[*]} into $out"
	(cd "$root/$moddir" && nice -n 19 go build -trimpath -o "$out/" "${missing[@]}")
	echo "fetch-containerd: built $out in $((SECONDS - start)) s"
}

containerd() {
	local n=$1 mod=internal/tools/containerd$1 v
	v=$(version "$mod" github.com/containerd/containerd/v2)
	build "$mod" "$cache/$v/bin" \
		github.com/containerd/containerd/v2/cmd/containerd \
		github.com/containerd/containerd/v2/cmd/ctr \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
	ln -sfn "$v" "$cache/$n"
}

crictl() {
	local mod=internal/tools/crictl v
	v=$(version "$mod" sigs.k8s.io/cri-tools)
	build "$mod" "$cache/crictl-$v/bin" sigs.k8s.io/cri-tools/cmd/crictl
	ln -sfn "crictl-$v" "$cache/crictl"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(24 23 crictl)
for t in "${targets[@]}"; do
	case $t in
	24 | 23) containerd "$t" ;;
	crictl) crictl ;;
	*) echo "fetch-containerd: unknown toolchain $t (want 24, 23 or crictl)" >&2; exit 2 ;;
	esac
done
