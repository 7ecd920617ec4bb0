#!/bin/bash
# make demo: what cvm does today, end to end, with real recorded evidence.
#  1. verify a real SEV-SNP report (AMD Milan, recorded from hardware) offline
#     against AMD's pinned roots, and print its claims;
#  2. show that one flipped bit in it is rejected, with the reason;
#  3. a simulated-TEE round trip: make a signing chain, sign a report for a
#     measurement and report data, verify it back into claims that say "sim".
set -euo pipefail
cvm=${1:?usage: demo.sh path/to/cvm}
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
printf '\ndemo: done\n'
