#!/usr/bin/env bash
# install.sh: install cvm under PREFIX so that it runs with no options.
#
#   PREFIX/bin/cvm, PREFIX/bin/cvm-kbs, PREFIX/bin/containerd-shim-cvm-v2
#   PREFIX/share/cvm/cvm-agent                      the guest agent (/init)
#   PREFIX/share/cvm/vmlinuz-<release>              the default guest kernel
#   PREFIX/share/cvm/modules/<release>/...          its module tree
#
# `cvm launch` and the shim find the agent and the kernel there (the agent
# next to the binary or in <exe>/../share/cvm; launcher/kernel.Default looks
# in <exe>/../share/cvm). The kernel is the default release
# (launcher/kernel.DefaultRelease) from .cache/inputs (`make test-inputs`).
#
# Usage: scripts/install.sh [--bin DIR] PREFIX
#   --bin DIR   take the binaries already built in DIR (`make build` puts
#               them in bin/) instead of building them (static,
#               CGO_ENABLED=0, -trimpath).
# Environment: CVM_KERNEL_RELEASE overrides the kernel release (must be in
# .cache/inputs); VERSION is stamped into the binaries it builds.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/local/go/bin:$PATH
release=${CVM_KERNEL_RELEASE:-6.12.117+deb13-cloud-amd64}
inputs=$root/.cache/inputs

die() { echo "install.sh: $*" >&2; exit 1; }

bin=""
while [ $# -gt 0 ]; do
	case $1 in
	--bin) [ $# -ge 2 ] || die "--bin needs a directory"; bin=$2; shift 2 ;;
	-h|--help) sed -n '2,19p' "$0"; exit 0 ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || die "usage: scripts/install.sh [--bin DIR] PREFIX"
prefix=$1
case $prefix in /*) ;; *) prefix=$(pwd)/$prefix ;; esac

kernel=$inputs/vmlinuz-$release
modules=$inputs/modules/$release
[ -f "$kernel" ] || die "no guest kernel $kernel: run 'make test-inputs'"
[ -d "$modules" ] || die "no module tree $modules: run 'make test-inputs'"

cmds=(cvm cvm-kbs containerd-shim-cvm-v2 cvm-agent)
if [ -z "$bin" ]; then
	bin=$(mktemp -d)
	trap 'rm -rf "$bin"' EXIT
	version=${VERSION:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo dev)}
	pkgs=()
	for c in "${cmds[@]}"; do pkgs+=("./cmd/$c"); done
	(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$bin/" "${pkgs[@]}")
fi
for c in "${cmds[@]}"; do
	[ -x "$bin/$c" ] || die "$bin/$c is missing or not executable (run 'make build')"
done

share=$prefix/share/cvm
install -d -m 0755 "$prefix/bin" "$share" "$share/modules"
for c in cvm cvm-kbs containerd-shim-cvm-v2; do
	install -m 0755 "$bin/$c" "$prefix/bin/$c"
done
install -m 0755 "$bin/cvm-agent" "$share/cvm-agent"
install -m 0644 "$kernel" "$share/vmlinuz-$release"
# Replace the module tree as a whole, so no stale module survives.
rm -rf "$share/modules/$release.new"
cp -R "$modules" "$share/modules/$release.new"
chmod -R u=rwX,go=rX "$share/modules/$release.new"
rm -rf "$share/modules/$release"
mv "$share/modules/$release.new" "$share/modules/$release"
echo "installed cvm into $prefix (guest kernel $release)"
