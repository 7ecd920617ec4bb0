#!/bin/bash
# Fetches the large, public test inputs of the launch-measurement vectors
# (../shared/testdata/measure/README.md) from Debian's archive with
# apt-get download, extracts the files the tests use into .cache/inputs/,
# and checks each by SHA-256. Idempotent: files already present and correct
# are kept. Needs root for apt-get update only when the package lists are
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/inputs
mkdir -p "$out"
declare -A want=(
	[OVMF.fd]=7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773
	[OVMF_CODE.fd]=d9b568def24088c92f34b5479e0ed7e44d0a4d4cea8a0f5716719180bba48106
	[vmlinuz-6.1.0-56-cloud-amd64]=51349501a3d1ff83836437d2b365fd2d57f2feb8642d315e5181dec23d4c3275
)
ok() { [ -f "$out/$1" ] && echo "${want[$1]}  $out/$1" | sha256sum -c --status; }
need=0
for f in "${!want[@]}"; do ok "$f" || need=1; done
[ $need = 0 ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
download() {
	(cd "$tmp" && apt-get download "$1" >/dev/null 2>&1) || {
		echo "fetch-test-inputs: apt-get download $1 failed; updating package lists" >&2
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		(cd "$tmp" && apt-get download "$1" >/dev/null)
	}
}
download ovmf=2022.11-6+deb12u2
download linux-image-6.1.0-56-cloud-amd64=6.1.192-2
for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/x"; done
cp "$tmp/x/usr/share/ovmf/OVMF.fd" "$out/OVMF.fd"
cp "$tmp/x/usr/share/OVMF/OVMF_CODE.fd" "$out/OVMF_CODE.fd"
cp "$tmp/x/boot/vmlinuz-6.1.0-56-cloud-amd64" "$out/vmlinuz-6.1.0-56-cloud-amd64"
for f in "${!want[@]}"; do
	ok "$f" || { echo "fetch-test-inputs: $out/$f: SHA-256 mismatch (want ${want[$f]})" >&2; exit 1; }
done
echo "fetch-test-inputs: $out ready"
