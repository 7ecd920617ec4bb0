#!/bin/bash
# make demo: what cvm does today, end to end, with real recorded evidence.
#  1. verify a real SEV-SNP report (AMD Milan, recorded from hardware) offline
#     against AMD's pinned roots, and print its claims;
#  2. show that one flipped bit in it is rejected, with the reason;
#  3. a simulated-TEE round trip: make a signing chain, sign a report for a
#     measurement and report data, verify it back into claims that say "sim";
#  5. the key broker: a guest attests with the simulated TEE and receives a
#     key sealed to its ephemeral key; a debug guest is denied, and the
#     audit log says why.
set -euo pipefail
cvm=${1:?usage: demo.sh path/to/cvm path/to/cvm-kbs}
kbs=${2:?usage: demo.sh path/to/cvm path/to/cvm-kbs}
cd "$(dirname "$0")/.."
work=.demo
rm -rf "$work" && mkdir -p "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Verify a real SEV-SNP report (Milan) offline against AMD's pinned roots"
echo "\$ cvm attest verify --tee snp --report testdata/snp/milan-report.bin --certs testdata/snp/milan-vcek.der --offline"
"$cvm" attest verify --tee snp --report testdata/snp/milan-report.bin --certs testdata/snp/milan-vcek.der --offline
echo "(this report's guest policy allows debugging: \"debug\": true above; a key broker policy denies it)"

step "2. The same report with one bit flipped in its measurement"
cp testdata/snp/milan-report.bin "$work/tampered.bin"
printf '\x01' | dd of="$work/tampered.bin" bs=1 seek=$((0x90)) conv=notrunc status=none
if "$cvm" attest verify --tee snp --report "$work/tampered.bin" --certs testdata/snp/milan-vcek.der --offline >/dev/null; then
	echo "demo: a tampered report verified; this is a bug" >&2
	exit 1
fi
echo "(rejected, as it must be)"

step "3. Simulated TEE round trip"
"$cvm" attest sim init --dir "$work/sim"
measurement=$(printf 'c0ffee%.0s' {1..16})
"$cvm" attest sim report --dir "$work/sim" --measurement "$measurement" --report-data 6e6f6e6365 --out "$work/sim-report.bin"
"$cvm" attest sim certs --dir "$work/sim" --out "$work/sim-vcek.pem"
echo "\$ cvm attest verify --tee sim --report $work/sim-report.bin --certs $work/sim-vcek.pem --sim-root $work/sim/root.pem"
"$cvm" attest verify --tee sim --report "$work/sim-report.bin" --certs "$work/sim-vcek.pem" --sim-root "$work/sim/root.pem"

step "4. The simulated report is never accepted as real SEV-SNP"
if "$cvm" attest verify --tee snp --report "$work/sim-report.bin" --certs "$work/sim-vcek.pem" --offline >/dev/null; then
	echo "demo: a simulated report verified as snp; this is a bug" >&2
	exit 1
fi
echo "(rejected, as it must be)"
step "5. Key broker: release a key to an attested guest"
port=${CVM_DEMO_PORT:-18443}
"$kbs" init --dir "$work/kbs" --listen "127.0.0.1:$port" --sim-root "$work/sim/root.pem" >/dev/null
sed -i 's/^metrics_listen:.*/metrics_listen: "off"/' "$work/kbs/kbs.yaml"
"$kbs" serve --config "$work/kbs/kbs.yaml" 2>"$work/kbs.log" &
kbs_pid=$!
trap 'kill $kbs_pid 2>/dev/null || true' EXIT
admin() { "$cvm" kbs --admin-config "$work/kbs/admin.yaml" "$@"; }
for _ in $(seq 50); do admin resource list >/dev/null 2>&1 && break; sleep 0.2; done
printf 'the disk key' > "$work/disk.key"
echo "\$ cvm kbs resource put repo/key/disk; refvalue add --tee sim --measurement c0ffee..."
admin resource put repo/key/disk --file "$work/disk.key"
admin refvalue add --tee sim --measurement "$measurement"
echo "\$ cvm kbs fetch --tee sim --measurement c0ffee...   (the guest side)"
"$cvm" kbs fetch --addr "127.0.0.1:$port" --ca "$work/kbs/ca.pem" --resource repo/key/disk \
	--tee sim --sim-dir "$work/sim" --measurement "$measurement"
echo
echo "\$ cvm kbs fetch ... --policy-debug   (a debug guest)"
if "$cvm" kbs fetch --addr "127.0.0.1:$port" --ca "$work/kbs/ca.pem" --resource repo/key/disk \
	--tee sim --sim-dir "$work/sim" --measurement "$measurement" --policy-debug; then
	echo "demo: a debug guest received the key; this is a bug" >&2
	exit 1
fi
echo "\$ cvm kbs audit tail -n 1   (what the operator sees)"
admin audit tail -n 1
admin audit verify
kill -TERM $kbs_pid && wait $kbs_pid
trap - EXIT
printf '\ndemo: done\n'
