#!/usr/bin/env bash
# Runs in the VM on the release kernel (make bench-quick): the two ratios of
# issue 4, measured side by side in one run, over memory-backed null_blk
# devices and a veth link with netem RTT 10 ms (5 ms each way).
#
#   async: 4k random writes, QD32, completion async: IOPS of a speculative
#          source over IOPS of dm-linear on the same kind of device (>= 0.8)
#   sync:  4k random writes, QD1, completion sync: mean latency of a
#          speculative source over that of lock-sync (<= 0.6)
set -euo pipefail
export DM_DISABLE_UDEV=1
MODULE=${DMSM_MODULE:?DMSM_MODULE: path of dm-specmirror.ko}
RUNTIME=${DMSM_BENCH_SECONDS:-20}
RTT=${DMSM_BENCH_RTT:-10}
SIZE_MB=1024
S=bq-src D=bq-dst

cleanup() {
	set +e
	for d in bq-linear $S $D; do dmsetup remove --retry $d 2>/dev/null; done
	ip netns del $S 2>/dev/null; ip netns del $D 2>/dev/null
	for n in 0 1 2 3 4; do
		[ -d /sys/kernel/config/nullb/bq$n ] || continue
		echo 0 >/sys/kernel/config/nullb/bq$n/power; rmdir /sys/kernel/config/nullb/bq$n
	done
}
trap cleanup EXIT

mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
# nullb: a memory-backed null_blk device of SIZE_MB; prints its path.
nullb() {
	local d=/sys/kernel/config/nullb/bq$1
	mkdir "$d"
	echo "$SIZE_MB" >"$d/size"; echo 1 >"$d/memory_backed"; echo 4096 >"$d/blocksize"
	echo 1 >"$d/power"
	# null_blk names a configfs device after its directory.
	echo "/dev/bq$1"
}
grep -q '^dm_specmirror ' /proc/modules || insmod "$MODULE"
n0=$(nullb 0); n1=$(nullb 1); n2=$(nullb 2)
# Metadata devices: null_blk allocates only the blocks written.
m1=$(nullb 3); m2=$(nullb 4)
sectors=$(blockdev --getsz "$n0")

ip netns add $S; ip netns add $D
ip link add bq-veth-s netns $S type veth peer name bq-veth-d netns $D
ip -n $S addr add 10.79.0.1/24 dev bq-veth-s; ip -n $S link set bq-veth-s up; ip -n $S link set lo up
ip -n $D addr add 10.79.0.2/24 dev bq-veth-d; ip -n $D link set bq-veth-d up; ip -n $D link set lo up
if [ "$RTT" -gt 0 ]; then
	tc -n $S qdisc add dev bq-veth-s root netem delay "$((RTT * 1000 / 2))us" limit 100000
	tc -n $D qdisc add dev bq-veth-d root netem delay "$((RTT * 1000 / 2))us" limit 100000
fi

# fio_json DEV QD: 4k random writes for RUNTIME seconds; prints "iops lat_ns".
fio_run() {
	fio --name=b --filename="$1" --rw=randwrite --bs=4k --iodepth="$2" --ioengine=libaio \
		--direct=1 --time_based --runtime="$RUNTIME" --ramp_time=2 --randrepeat=0 \
		--norandommap --output-format=json |
	python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print(j["iops"], j["clat_ns"]["mean"])'
}

# mirror OPTS: target on n1 (namespace D), source on n2 (namespace S),
# their metadata on m1 and m2.
mirror_up() {
	ip netns exec $D dmsetup create $D --table "0 $sectors specmirror target $n1 $m1 10.79.0.2:7900"
	ip netns exec $S dmsetup create $S --table "0 $sectors specmirror source $n2 $m2 10.79.0.2:7900 $1"
	for _ in $(seq 1 100); do dmsetup status $S | grep -q ' connected ' && return 0; sleep 0.1; done
	echo "bench: source did not connect: $(dmsetup status $S)" >&2; return 1
}
mirror_down() {
	for _ in $(seq 1 600); do dmsetup status $S | grep -q ' ring=0/' && break; sleep 0.1; done
	echo "bench:   source: $(dmsetup status $S)"
	dmsetup remove $S; dmsetup remove $D
}

echo "bench: 4k randwrite QD32, dm-linear on null_blk"
dmsetup create bq-linear --table "0 $sectors linear $n0 0"
read -r linear_iops _ < <(fio_run /dev/mapper/bq-linear 32)
dmsetup remove bq-linear
echo "bench:   dm-linear: $linear_iops IOPS"

echo "bench: 4k randwrite QD32, specmirror speculative, completion async, RTT $RTT ms"
# DMSM_BENCH_ASYNC_OPTS: optional arguments of this source (default: the
# two zeroed devices need no initial copy).
mirror_up "${DMSM_BENCH_ASYNC_OPTS:-2 initial_sync none}"
read -r spec_iops _ < <(fio_run /dev/mapper/$S 32)
echo "bench:   speculative async: $spec_iops IOPS"
mirror_down

echo "bench: 4k randwrite QD1, completion sync, speculative, RTT $RTT ms"
mirror_up "4 completion sync initial_sync none"
read -r _ spec_lat < <(fio_run /dev/mapper/$S 1)
echo "bench:   speculative sync: mean latency $spec_lat ns"
mirror_down

echo "bench: 4k randwrite QD1, completion sync, lock-sync, RTT $RTT ms"
mirror_up "6 completion sync mode lock-sync initial_sync none"
read -r _ ls_lat < <(fio_run /dev/mapper/$S 1)
echo "bench:   lock-sync sync: mean latency $ls_lat ns"
mirror_down

python3 - "$spec_iops" "$linear_iops" "$spec_lat" "$ls_lat" <<'PY'
import sys
si, li, sl, ll = map(float, sys.argv[1:])
r1 = si / li if li else 0.0
r2 = sl / ll if ll else 0.0
print(f"bench: ratio speculative async / dm-linear throughput (QD32): {r1:.2f} (target >= 0.80) {'PASS' if r1 >= 0.8 else 'FAIL'}")
print(f"bench: ratio speculative / lock-sync mean latency (QD1, sync):  {r2:.2f} (target <= 0.60) {'PASS' if r2 <= 0.6 else 'FAIL'}")
PY
