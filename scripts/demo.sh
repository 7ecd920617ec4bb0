#!/bin/bash
# make demo: a confidential microVM launch, end to end, on this machine.
#  1. verify a real SEV-SNP report (AMD Milan, recorded from hardware)
#     offline against AMD's pinned roots; a flipped bit is rejected;
#  2. make a simulated TEE (the launcher plays the AMD secure processor);
#  3. start a key broker on loopback (embedded store) that trusts it;
#  4. the tenant: build a small program, encrypt a disk holding it, compute
#     the launch measurement and register it with the disk key and a policy;
#  5. the host: `cvm launch` boots the microVM; the guest attests, receives
#     the key, opens the disk and runs the program; its output comes back;
#  6. the broker's decision from its audit log; then a launch whose
#     measurement differs (one argument changed) is denied (exit 126).
# Everything runs on loopback; only the processes started here are stopped.
set -euo pipefail
cvm=${1:?usage: demo.sh path/to/cvm path/to/cvm-kbs}
kbs=${2:?usage: demo.sh path/to/cvm path/to/cvm-kbs}
cvm=$(realpath "$cvm")
kbs=$(realpath "$kbs")
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
work=.demo
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

agent=$(dirname "$cvm")/cvm-agent
[ -x "$agent" ] || { echo "demo: $agent is missing: run 'make build'" >&2; exit 1; }
kernel=.cache/inputs/vmlinuz-6.12.117+deb13-cloud-amd64
[ -f "$kernel" ] || { echo "demo: $kernel is missing: run 'make test-inputs'" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "demo: qemu-system-x86_64 is missing (Debian package qemu-system-x86)" >&2; exit 1; }

step "1. Verify a real SEV-SNP report (Milan) offline against AMD's pinned roots"
show cvm attest verify --tee snp --report testdata/snp/milan-report.bin --certs testdata/snp/milan-vcek.der --offline
"$cvm" attest verify --tee snp --report testdata/snp/milan-report.bin --certs testdata/snp/milan-vcek.der --offline | head -12
echo "  ..."
cp testdata/snp/milan-report.bin "$work/tampered.bin"
printf '\x01' | dd of="$work/tampered.bin" bs=1 seek=$((0x90)) conv=notrunc status=none
if "$cvm" attest verify --tee snp --report "$work/tampered.bin" --certs testdata/snp/milan-vcek.der --offline >/dev/null 2>&1; then
	echo "demo: a tampered report verified; this is a bug" >&2
	exit 1
fi
echo "(the same report with one bit flipped in its measurement: rejected, as it must be)"

step "2. A simulated TEE for this machine (no SEV-SNP hardware here)"
show cvm attest sim init --dir $work/sim
"$cvm" attest sim init --dir "$work/sim"

step "3. A key broker on loopback, trusting the simulated TEE"
port=${CVM_DEMO_PORT:-18443}
show cvm-kbs init --dir $work/kbs --listen 127.0.0.1:$port --sim-root $work/sim/root.pem
"$kbs" init --dir "$work/kbs" --listen "127.0.0.1:$port" --sim-root "$work/sim/root.pem" >/dev/null
sed -i 's/^metrics_listen:.*/metrics_listen: "off"/' "$work/kbs/kbs.yaml"
"$kbs" serve --config "$work/kbs/kbs.yaml" 2>"$work/kbs.log" &
kbs_pid=$!
trap 'kill $kbs_pid 2>/dev/null || true' EXIT
admin() { "$cvm" kbs --admin-config "$work/kbs/admin.yaml" "$@"; }
for _ in $(seq 50); do admin resource list >/dev/null 2>&1 && break; sleep 0.2; done
admin resource list >/dev/null

step "4. The tenant: a program on an encrypted disk, its measurement and key registered"
mkdir -p "$work/root/bin"
show CGO_ENABLED=0 go build -o $work/root/bin/hello ./internal/demo/hello
CGO_ENABLED=0 go build -trimpath -o "$work/root/bin/hello" ./internal/demo/hello
show cvm image encrypt --rootfs $work/root --out $work/disk.img --key-out $work/disk.key
"$cvm" image encrypt --rootfs "$work/root" --out "$work/disk.img" --key-out "$work/disk.key"
launch_args=(--kbs-ca "$work/kbs/ca.pem" --resource demo/disk-key --entrypoint /bin/hello --arg tenant)
show "cvm measure launch ${launch_args[*]} --json | cvm kbs refvalue import /dev/stdin"
"$cvm" measure launch "${launch_args[@]}" --json | admin refvalue import /dev/stdin
show cvm kbs resource put demo/disk-key --file $work/disk.key
admin resource put demo/disk-key --file "$work/disk.key"
echo 'claims.tee == "sim" && !claims.debug && appraisal.status == "affirming"' > "$work/rule.cel"
show "cvm kbs policy set demo/disk-key --file rule.cel   # $(cat "$work/rule.cel")"
admin policy set demo/disk-key --file "$work/rule.cel"

step "5. The host: cvm launch"
show cvm launch --disk $work/disk.img --kbs 127.0.0.1:$port ${launch_args[*]} --tee sim --sim-dir $work/sim
"$cvm" launch --disk "$work/disk.img" --kbs "127.0.0.1:$port" "${launch_args[@]}" --tee sim --sim-dir "$work/sim" \
	--state-dir "$work/launch"
echo "(exit status $?: the program's own)"

step "6. The broker's decision (what the operator sees)"
show cvm kbs audit tail -n 1
admin audit tail -n 1

echo
echo "A host that changes the launch (here one argument) changes the measurement:"
show cvm launch ... --arg intruder
set +e
"$cvm" launch --disk "$work/disk.img" --kbs "127.0.0.1:$port" --kbs-ca "$work/kbs/ca.pem" --resource demo/disk-key \
	--entrypoint /bin/hello --arg intruder --tee sim --sim-dir "$work/sim" --state-dir "$work/launch-denied" --quiet
code=$?
set -e
if [ "$code" != 126 ]; then
	echo "demo: the changed launch exited $code, want 126 (denied); this is a bug" >&2
	exit 1
fi
echo "(exit status 126: denied)"
show cvm kbs audit tail -n 1
admin audit tail -n 1
admin audit verify

kill -TERM $kbs_pid && wait $kbs_pid || true
trap - EXIT
printf '\ndemo: done in %ds\n' $(( $(date +%s) - start ))
