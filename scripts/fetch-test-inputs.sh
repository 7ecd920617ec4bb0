#!/bin/bash
# Fetches the large, public test inputs (the launch-measurement vectors of
# ../shared/testdata/measure/README.md, and the guest kernels with their
# module trees that launcher/kernel and the boot tests use) from Debian's
# archive with apt-get download, extracts the files the tests use into
# .cache/inputs/, and checks each by SHA-256:
#
#   .cache/inputs/OVMF.fd, OVMF_CODE.fd          ovmf 2022.11-6+deb12u2 (Debian 12)
#   .cache/inputs/vmlinuz-6.1.0-56-cloud-amd64    linux-image-6.1.0-56-cloud-amd64 6.1.192-2 (Debian 12)
#   .cache/inputs/modules/6.1.0-56-cloud-amd64/
#   .cache/inputs/vmlinuz-6.12.117+deb13-cloud-amd64   linux-image-6.12.117+deb13-cloud-amd64 6.12.117-1 (Debian 13)
#   .cache/inputs/modules/6.12.117+deb13-cloud-amd64/
#
# A module tree is the package's lib/modules/<release>/ as shipped (kernel/…
# with the .ko.xz files, modules.builtin, modules.order, …). It is pinned by
# the SHA-256 of a manifest (the sorted "sha256  ./path" lines of every file
# in the tree, as sha256sum prints them) rather than by the .deb alone: the
# manifest can be checked on every run without keeping the .deb, and it
# catches a tree that was changed or half-copied after extraction. Each .deb
# is pinned as well and checked right after download.
#
# The Debian 13 package comes from a trixie source list this script writes
# under .cache/apt-trixie/, with its own apt lists and cache directories, so
# the system's apt state is untouched. Its archive URI is the system's own
# (the first URIs: line of /etc/apt/sources.list.d/debian.sources, else the
# first deb line of /etc/apt/sources.list); the lists are verified with
# /usr/share/keyrings/debian-archive-keyring.gpg.
#
# Idempotent and quiet: files already present and correct are kept, and only
# the packages behind missing or wrong files are downloaded. Runs as root
# (apt-get update and download). Not safe to run twice at the same time on
# one tree: a module tree is replaced by rm and mv.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/inputs
mkdir -p "$out"

k61=6.1.0-56-cloud-amd64
k612=6.12.117+deb13-cloud-amd64

declare -A want=(
	[OVMF.fd]=7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773
	[OVMF_CODE.fd]=d9b568def24088c92f34b5479e0ed7e44d0a4d4cea8a0f5716719180bba48106
	[vmlinuz-$k61]=51349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec23d4c3275
	[vmlinuz-$k612]=ed8f0dbdbefe3994093937f5ee934818ae902b88cb0b6bc423811c10d55b87b0
)
# Manifest digests of the module trees (see above).
declare -A want_modules=(
	[$k61]=bc2c4e81eb4575e3546fe6e1de29bc83240944a530de0a263e00035e56edf245
	[$k612]=75a9576ddd362197c09d7945074885cb99d115472ff31ed46ddca821f4014d4a
)
# The .deb files, checked after download.
declare -A want_deb=(
	[linux-image-$k61]=e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee
	[linux-image-$k612]=e9893e5295d0549b8852611f12a4b8b5f6cc4b8128dcc2086b9847793b904ab7
)

ok() { [ -f "$out/$1" ] && echo "${want[$1]}  $out/$1" | sha256sum -c --status; }
manifest() {
	(cd "$out/modules/$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}
modules_ok() { [ -d "$out/modules/$1" ] && [ "$(manifest "$1")" = "${want_modules[$1]}" ]; }

need_ovmf=0 need_61=0 need_612=0
{ ok OVMF.fd && ok OVMF_CODE.fd; } || need_ovmf=1
{ ok "vmlinuz-$k61" && modules_ok "$k61"; } || need_61=1
{ ok "vmlinuz-$k612" && modules_ok "$k612"; } || need_612=1
[ $need_ovmf$need_61$need_612 = 000 ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# download PKG=VERSION [APT-OPTIONS…]: apt-get download into $tmp/deb,
# updating the package lists once if the first try fails.
download() {
	local pkg=$1
	shift
	mkdir -p "$tmp/deb"
	(cd "$tmp/deb" && apt-get "$@" download "$pkg" >/dev/null 2>&1) || {
		echo "fetch-test-inputs: apt-get download $pkg failed; updating package lists" >&2
		DEBIAN_FRONTEND=noninteractive apt-get "$@" update -qq
		# As root, apt downloads into a directory _apt cannot write and
		# warns about it; the warning is noise here.
		(cd "$tmp/deb" && apt-get "$@" download "$pkg" 2>&1 >/dev/null |
			{ grep -v '^W: Download is performed unsandboxed' || true; } >&2)
	}
}

# check_deb NAME: the downloaded NAME_*.deb matches its pinned SHA-256.
check_deb() {
	local f
	f=$(echo "$tmp/deb/$1"_*.deb)
	echo "${want_deb[$1]}  $f" | sha256sum -c --status || {
		echo "fetch-test-inputs: $f: SHA-256 mismatch (want ${want_deb[$1]})" >&2
		exit 1
	}
}

# install_kernel RELEASE: copies vmlinuz-RELEASE and the module tree out of
# the extracted package in $tmp/x (lib/modules or, merged-/usr, usr/lib/modules).
install_kernel() {
	local rel=$1 src
	cp "$tmp/x/boot/vmlinuz-$rel" "$out/vmlinuz-$rel"
	for src in "$tmp/x/lib/modules/$rel" "$tmp/x/usr/lib/modules/$rel" ""; do
		[ -d "$src" ] && break
	done
	[ -n "$src" ] || { echo "fetch-test-inputs: no lib/modules/$rel in linux-image-$rel" >&2; exit 1; }
	mkdir -p "$out/modules"
	rm -rf "$out/modules/$rel.new" "$out/modules/$rel"
	cp -a "$src" "$out/modules/$rel.new"
	mv "$out/modules/$rel.new" "$out/modules/$rel"
}

if [ $need_ovmf = 1 ] || [ $need_61 = 1 ]; then
	if [ $need_ovmf = 1 ]; then
		download ovmf=2022.11-6+deb12u2
	fi
	if [ $need_61 = 1 ]; then
		download "linux-image-$k61=6.1.192-2"
		check_deb "linux-image-$k61"
	fi
	for deb in "$tmp"/deb/*.deb; do dpkg -x "$deb" "$tmp/x"; done
	if [ $need_ovmf = 1 ]; then
		cp "$tmp/x/usr/share/ovmf/OVMF.fd" "$out/OVMF.fd"
		cp "$tmp/x/usr/share/OVMF/OVMF_CODE.fd" "$out/OVMF_CODE.fd"
	fi
	if [ $need_61 = 1 ]; then
		install_kernel "$k61"
	fi
	rm -rf "$tmp/deb" "$tmp/x"
fi

if [ $need_612 = 1 ]; then
	apt=$PWD/.cache/apt-trixie
	uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
	[ -n "$uri" ] || uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n1)
	[ -n "$uri" ] || { echo "fetch-test-inputs: no archive URI in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2; exit 1; }
	mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial"
	cat >"$apt/sources/trixie.sources" <<EOF
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources"
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::Status=/dev/null)
	if ! compgen -G "$apt/lists/*_Packages*" >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" update -qq
	fi
	download "linux-image-$k612=6.12.117-1" "${opts[@]}"
	check_deb "linux-image-$k612"
	dpkg -x "$tmp"/deb/*.deb "$tmp/x"
	install_kernel "$k612"
fi

for f in "${!want[@]}"; do
	ok "$f" || { echo "fetch-test-inputs: $out/$f: SHA-256 mismatch (want ${want[$f]})" >&2; exit 1; }
done
for rel in "${!want_modules[@]}"; do
	modules_ok "$rel" || { echo "fetch-test-inputs: $out/modules/$rel: manifest SHA-256 $(manifest "$rel"), want ${want_modules[$rel]}" >&2; exit 1; }
done
echo "fetch-test-inputs: $out ready"
