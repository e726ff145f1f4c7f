#!/usr/bin/env bash
# Runs in the VM: a speculative async source whose writes outrun its link
# (netem rate 100 mbit, RTT 10 ms; 1M writes at QD8 on null_blk for 30 s),
# with the source's status and the bytes on the link sampled every 0.5 s.
# It shows where the link sits idle while the source cycles through
# degraded mode (make bench's link-rate runs: spec async used 0.21 of the
# link on 2026-12-07).
#
#   DMSM_MODULE=path/to/dm-specmirror.ko scripts/vm.sh --release scripts/probe-pullahead.sh
#
# Knobs: DMSM_PROBE_OPTS (the source's optional arguments; "2 initial_sync
# none"), DMSM_PROBE_SECS (30), DMSM_PROBE_RATE (100mbit; none: no limit), DMSM_PROBE_BS (1M) and
# DMSM_PROBE_QD (8) for fio's writes (DMSM_PROBE_RW, write: sequential).
set -uo pipefail
export DM_DISABLE_UDEV=1
A=pa-src B=pa-dst
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
nullb() { # N [MB]: a memory-backed null_blk device
	local d=/sys/kernel/config/nullb/pa$1
	mkdir "$d"; echo "${2:-512}" >"$d/size"; echo 1 >"$d/memory_backed"; echo 4096 >"$d/blocksize"
	echo 1 >"$d/power"; echo "/dev/pa$1"
}
grep -q '^dm_specmirror ' /proc/modules || insmod "${DMSM_MODULE:?DMSM_MODULE}"
la=$(nullb 0); lb=$(nullb 1); ma=$(nullb 2 16); mb=$(nullb 3 16)
n=$(blockdev --getsz "$la")
ip netns add $A; ip netns add $B
ip link add veth-a netns $A type veth peer name veth-b netns $B
ip -n $A addr add 10.77.0.1/24 dev veth-a; ip -n $A link set veth-a up; ip -n $A link set lo up
ip -n $B addr add 10.77.0.2/24 dev veth-b; ip -n $B link set veth-b up; ip -n $B link set lo up
for e in "$A veth-a" "$B veth-b"; do
	set -- $e
	rate=${DMSM_PROBE_RATE:-100mbit}
	# shellcheck disable=SC2046 # "none": no rate limit
	tc -n "$1" qdisc add dev "$2" root netem delay 5ms $([ "$rate" = none ] || echo rate "$rate") limit 100000
done
ip netns exec $B dmsetup create $B --table "0 $n specmirror target $lb $mb 10.77.0.2:7789"
ip netns exec $A dmsetup create $A --table "0 $n specmirror source $la $ma 10.77.0.2:7789 ${DMSM_PROBE_OPTS:-2 initial_sync none}"
for _ in $(seq 1 100); do dmsetup status $A | grep -q ' connected ' && break; sleep 0.1; done
# A process in the source's namespace: its /proc/PID/net/dev is that
# namespace's, read without an `ip netns exec` per sample.
ip netns exec $A sleep 100000 & npid=$!
sleep 0.5
txb() { awk '/veth-a/ {print $10}' "/proc/$npid/net/dev"; }
fio --name=s --filename=/dev/mapper/$A --rw="${DMSM_PROBE_RW:-write}" --bs="${DMSM_PROBE_BS:-1M}" --iodepth="${DMSM_PROBE_QD:-8}" --ioengine=libaio --direct=1 \
	--time_based --runtime="${DMSM_PROBE_SECS:-30}" --output-format=terse --output=/tmp/pa-fio.txt >/dev/null 2>&1 &
fpid=$!
t0=$(date +%s%N); prev=$(txb); pt=$t0
while kill -0 $fpid 2>/dev/null; do
	sleep 0.5
	b=$(txb); st=$(dmsetup status $A); t=$(date +%s%N)
	f() { tr ' ' '\n' <<<"$st" | grep "^$1=" | cut -d= -f2; }
	echo "probe: t=$(( (t - t0) / 1000000 ))ms link=$(( (b - prev) * 1000 / ((t - pt) / 1000) ))KB/s" \
		"$(awk '{print $6}' <<<"$st") ring=$(f ring) acked=$(f acked) durable=$(f durable)" \
		"deferred=$(f deferred) waits=$(f waits) degraded_count=$(f degraded_count) reconnects=$(f reconnects)" \
		"dirty=$(f dirty) syncing=$(f syncing) resync_kib=$(f resync_kib) al=$(f al) queued=$(f queued) wakes=$(f wakes)"
	prev=$b; pt=$t
done
IFS=';' read -ra F </tmp/pa-fio.txt; echo "probe: fio wrote ${F[46]:-?} KiB at ${F[47]:-?} KiB/s"
echo "probe: final $(dmsetup status $A)"
kill $npid
dmsetup remove --retry $A; dmsetup remove --retry $B
ip netns del $A; ip netns del $B
