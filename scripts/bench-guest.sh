#!/usr/bin/env bash
# Runs in the VM on the release kernel (make bench, through scripts/bench.sh):
# every system of issue 6 on the same kind of memory-backed null_blk
# devices and the same emulated link, for each netem RTT, with three fio
# workloads. Writes raw fio JSON and a run description into $DMSM_BENCH_OUT;
# scripts/bench-report.py turns them into the table and plots.
#
# Systems (each set up on fresh devices, torn down after its workloads):
#   local       dm-linear on one null_blk: the upper bound
#   spec-async  dm-specmirror, mode speculative, completion async
#   spec-sync   dm-specmirror, mode speculative, completion sync
#   lock-sync   dm-specmirror, mode lock-sync, completion sync
#   drbd-A      DRBD 8.4 (in-kernel), protocol A
#   drbd-C      DRBD 8.4 (in-kernel), protocol C
#   dm-mirror   dm-raid1 with a core log, second leg on NBD from the peer
#
# The link: a veth pair with netem delay RTT/2 on each end. dm-specmirror
# and NBD run with the two ends in two network namespaces (S, D). DRBD 8.4
# cannot: its generic-netlink family is not netns-aware (drbdsetup only
# works in the initial namespace) and it creates its sockets in init_net
# (drivers/block/drbd/drbd_receiver.c: sock_create_kern(&init_net, ...)).
# So both DRBD nodes live in init_net, and a second veth pair with the same
# netem settings carries their traffic: policy routing sends each node's
# packets to the other's address out of its own veth end instead of
# through lo (see link_self_up).
set -uo pipefail
export DM_DISABLE_UDEV=1
MODULE=${DMSM_MODULE:?DMSM_MODULE: path of dm-specmirror.ko}
OUT=${DMSM_BENCH_OUT:?DMSM_BENCH_OUT: directory for the results}
QUICK=${DMSM_BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then RUNTIME=${DMSM_BENCH_SECONDS:-3}; RAMP=1
else RUNTIME=${DMSM_BENCH_SECONDS:-10}; RAMP=2; fi
RTTS=${DMSM_BENCH_RTTS:-0 1 10 50}
SYSTEMS=${DMSM_BENCH_SYSTEMS:-local spec-async spec-sync lock-sync drbd-A drbd-C dm-mirror}
WORKLOADS=${DMSM_BENCH_WORKLOADS:-qd1 qd32 seq}
# Repetitions of each workload in a row (issue 20: every headline figure
# from at least 3, with their spread).
REPS=${DMSM_BENCH_REPS:-3}
# Link rate for netem ("100mbit", "1gbit"; empty: none): the link-bound runs.
RATE=${DMSM_BENCH_RATE:-}
# DMSM_BENCH_PERF=1: a flat profile of the whole guest (perf, software
# clock, every CPU) over each run's measured part, in raw/*/WORKLOAD-rN.json.perf.txt.
PERF=${DMSM_BENCH_PERF:-0}
CLK_TCK=$(getconf CLK_TCK)
SIZE_MB=${DMSM_BENCH_SIZE_MB:-512}
S=bn-src D=bn-dst
DRBDSETUP=/lib/drbd/drbdsetup-84
mkdir -p "$OUT/raw"
: >"$OUT/runs.jsonl"

log() { echo "bench: $*"; }

# ---- devices -------------------------------------------------------------
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
# nullb N: a fresh memory-backed null_blk device of SIZE_MB; prints its path.
nullb() {
	local d=/sys/kernel/config/nullb/bn$1
	mkdir "$d" || return 1
	echo "$SIZE_MB" >"$d/size"; echo 1 >"$d/memory_backed"; echo 4096 >"$d/blocksize"
	echo 1 >"$d/power"
	echo "/dev/bn$1"
}
nullb_free_all() {
	local d
	for d in /sys/kernel/config/nullb/bn*; do
		[ -d "$d" ] || continue
		echo 0 >"$d/power"; rmdir "$d"
	done
}

# ---- links ---------------------------------------------------------------
links_up() {
	ip netns add $S; ip netns add $D
	ip link add bn-veth-s netns $S type veth peer name bn-veth-d netns $D
	ip -n $S addr add 10.79.0.1/24 dev bn-veth-s; ip -n $S link set bn-veth-s up; ip -n $S link set lo up
	ip -n $D addr add 10.79.0.2/24 dev bn-veth-d; ip -n $D link set bn-veth-d up; ip -n $D link set lo up
	link_self_up
}
# A veth pair with both ends in init_net (for DRBD): 10.80.0.1 on bn-a and
# 10.80.0.2 on bn-b. Locally generated packets to the other address are
# routed out of the own end (tables 101/102, rules before "local"), arrive
# on the other end and are delivered there (local table, accept_local).
link_self_up() {
	ip link add bn-a type veth peer name bn-b
	ip addr add 10.80.0.1/32 dev bn-a; ip addr add 10.80.0.2/32 dev bn-b
	ip link set lo up; ip link set bn-a up; ip link set bn-b up
	local i
	for i in all default bn-a bn-b; do
		sysctl -qw net.ipv4.conf.$i.accept_local=1 net.ipv4.conf.$i.rp_filter=0
	done
	ip neigh replace 10.80.0.2 lladdr "$(cat /sys/class/net/bn-b/address)" dev bn-a nud permanent
	ip neigh replace 10.80.0.1 lladdr "$(cat /sys/class/net/bn-a/address)" dev bn-b nud permanent
	ip route add 10.80.0.2 dev bn-a src 10.80.0.1 table 101
	ip route add 10.80.0.1 dev bn-b src 10.80.0.2 table 102
	ip rule add pref 10 iif lo to 10.80.0.2 lookup 101
	ip rule add pref 11 iif lo to 10.80.0.1 lookup 102
	ip rule add pref 100 lookup local
	ip rule del pref 0 lookup local
}
# set_rtt MS: netem delay MS/2 on each end of both veth pairs (none at 0),
# and the link rate RATE on each end if set.
set_rtt() {
	local half="$(($1 * 1000 / 2))us" dev
	local rate=()
	[ -z "$RATE" ] || rate=(rate "$RATE")
	for dev in "$S bn-veth-s" "$D bn-veth-d" "- bn-a" "- bn-b"; do
		set -- $dev
		local ns=()
		[ "$1" = - ] || ns=(-n "$1")
		tc "${ns[@]}" qdisc del dev "$2" root 2>/dev/null
		if [ "$half" != 0us ] || [ -n "$RATE" ]; then
			tc "${ns[@]}" qdisc add dev "$2" root netem delay "$half" "${rate[@]}" limit 100000 || return 1
		fi
	done
}
# CPU time the guest spent busy so far (user, nice, system, irq, softirq,
# steal: every CPU), in clock ticks.
cpu_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
# Packets and bytes the primary has sent on its end of the link so far
# (veth tx_packets: one per skb, so a GSO batch counts once; tx_bytes):
# how well sends coalesce, and how much of the link the replication used
# (with completion async, fio's rate can exceed it while the ring fills or
# the source runs degraded). Nothing for systems without a link (local).
link_tx() { # SYSTEM
	local dir
	case $1 in
	spec-*|lock-sync) dir=/sys/class/net/bn-veth-s/statistics
		ip netns exec $S cat $dir/tx_packets $dir/tx_bytes | paste -sd' ' ;;
	drbd-*) dir=/sys/class/net/bn-a/statistics; cat $dir/tx_packets $dir/tx_bytes | paste -sd' ' ;;
	esac 2>/dev/null
}

# ---- systems: up prints the device to test; settle waits until idle ------
SYS_DEV=
up_local() {
	local n0; n0=$(nullb 0) || return 1
	dmsetup create bn-linear --table "0 $(blockdev --getsz "$n0") linear $n0 0" || return 1
	echo "0 $(blockdev --getsz "$n0") linear $n0 0" >"$CUR/table"
	SYS_DEV=/dev/mapper/bn-linear
}
down_local() { dmsetup remove --retry bn-linear; }

spec_up() { # OPTS
	local n1 n2 m1 m2 sectors
	n1=$(nullb 1) && n2=$(nullb 2) || return 1
	# Metadata devices: null_blk allocates only the blocks written.
	m1=$(nullb 7) && m2=$(nullb 8) || return 1
	sectors=$(blockdev --getsz "$n1")
	ip netns exec $D dmsetup create $D --table "0 $sectors specmirror target $n1 $m1 10.79.0.2:7900" || return 1
	ip netns exec $S dmsetup create $S --table "0 $sectors specmirror source $n2 $m2 10.79.0.2:7900 $1" || return 1
	{ dmsetup table $S; dmsetup table $D; } >"$CUR/table"
	local _
	for _ in $(seq 1 200); do
		dmsetup status $S | grep -q ' connected ' && { SYS_DEV=/dev/mapper/$S; return 0; }
		sleep 0.1
	done
	echo "source did not connect: $(dmsetup status $S)"; return 1
}
spec_settle() {
	local _
	for _ in $(seq 1 1200); do dmsetup status $S | grep -q ' ring=0/' && return 0; sleep 0.1; done
	log "  ring did not drain in 120 s: $(dmsetup status $S)"
}
spec_down() {
	spec_settle
	dmsetup status $S >"$CUR/status-source"; dmsetup status $D >"$CUR/status-target"
	dmsetup remove --retry $S; dmsetup remove --retry $D
}
# Two new zeroed devices: initial_sync none, so no initial copy runs
# beside the measured writes.
up_spec-async() { spec_up "2 initial_sync none"; }
up_spec-sync() { spec_up "4 completion sync initial_sync none"; }
up_lock-sync() { spec_up "6 mode lock-sync completion sync initial_sync none"; }
settle_spec-async() { spec_settle; }
settle_spec-sync() { spec_settle; }
settle_lock-sync() { spec_settle; }
down_spec-async() { spec_down; }
down_spec-sync() { spec_down; }
down_lock-sync() { spec_down; }

# DRBD 8.4 with drbdsetup-84 (drbd-utils 9 ships it for 8.4 kernels): two
# resources on this one kernel, r0 (minor 0, primary, node 10.80.0.1) and
# r1 (minor 1, secondary, node 10.80.0.2), internal meta data, the initial
# sync skipped with new-current-uuid --clear-bitmap. Defaults otherwise.
drbd_up() { # PROTOCOL
	local n3 n4 i
	n3=$(nullb 3) && n4=$(nullb 4) || return 1
	drbdmeta --force 0 v08 "$n3" internal create-md >/dev/null 2>&1 &&
		drbdmeta --force 1 v08 "$n4" internal create-md >/dev/null 2>&1 ||
		{ echo "drbdmeta create-md failed"; return 1; }
	$DRBDSETUP new-resource r0 && $DRBDSETUP new-minor r0 0 0 &&
		$DRBDSETUP attach 0 "$n3" "$n3" internal &&
		$DRBDSETUP new-resource r1 && $DRBDSETUP new-minor r1 1 0 &&
		$DRBDSETUP attach 1 "$n4" "$n4" internal &&
		$DRBDSETUP connect r0 ipv4:10.80.0.1:7789 ipv4:10.80.0.2:7789 --protocol="$1" &&
		$DRBDSETUP connect r1 ipv4:10.80.0.2:7789 ipv4:10.80.0.1:7789 --protocol="$1" ||
		{ echo "drbdsetup-84 failed"; return 1; }
	for i in $(seq 1 300); do grep -q '^ 0: cs:Connected' /proc/drbd && break; sleep 0.1; done
	grep -q '^ 0: cs:Connected' /proc/drbd || { echo "drbd did not connect: $(cat /proc/drbd)"; return 1; }
	$DRBDSETUP new-current-uuid 0 --clear-bitmap && $DRBDSETUP primary 0 ||
		{ echo "drbd new-current-uuid/primary failed"; return 1; }
	for i in $(seq 1 300); do grep -q 'ro:Primary/Secondary ds:UpToDate/UpToDate' /proc/drbd && break; sleep 0.1; done
	grep -q 'ro:Primary/Secondary ds:UpToDate/UpToDate' /proc/drbd ||
		{ echo "drbd not UpToDate: $(cat /proc/drbd)"; return 1; }
	{ $DRBDSETUP show r0; $DRBDSETUP show r1; } >"$CUR/table" 2>&1
	SYS_DEV=/dev/drbd0
}
# Idle: nothing pending or unacknowledged on the primary (minor 0).
drbd_settle() {
	local _
	for _ in $(seq 1 1200); do
		sed -n '/^ 0:/,/^ 1:/p' /proc/drbd | grep -q 'lo:0 pe:0 ua:0 ap:0' && return 0
		sleep 0.1
	done
	log "  drbd did not go idle in 120 s: $(cat /proc/drbd)"
}
drbd_down() {
	drbd_settle
	cat /proc/drbd >"$CUR/status-drbd"
	$DRBDSETUP secondary 0; $DRBDSETUP down r0; $DRBDSETUP down r1
}
up_drbd-A() { drbd_up A; }
up_drbd-C() { drbd_up C; }
settle_drbd-A() { drbd_settle; }
settle_drbd-C() { drbd_settle; }
down_drbd-A() { drbd_down; }
down_drbd-C() { drbd_down; }

# dm-mirror: nbd-server in D exports n6; nbd-client in S attaches it as
# /dev/nbd0 (its socket lives in S, so NBD traffic crosses the veth pair);
# a mirror target with a core log over n5 (local leg) and /dev/nbd0, nosync.
up_dm-mirror() {
	local n5 n6 sectors
	n5=$(nullb 5) && n6=$(nullb 6) || return 1
	printf '[generic]\nuser = root\ngroup = root\nlistenaddr = 10.79.0.2\n[bench]\nexportname = %s\n' \
		"$n6" >/tmp/bn-nbd.conf
	ip netns exec $D nbd-server -C /tmp/bn-nbd.conf -p /tmp/bn-nbd.pid || { echo "nbd-server failed"; return 1; }
	local _
	for _ in $(seq 1 50); do [ -s /tmp/bn-nbd.pid ] && break; sleep 0.1; done
	sleep 0.5
	ip netns exec $S nbd-client 10.79.0.2 10809 /dev/nbd0 -N bench -b 4096 >/dev/null ||
		{ echo "nbd-client failed"; return 1; }
	sectors=$(blockdev --getsz "$n5")
	dmsetup create bn-mirror --table "0 $sectors mirror core 2 1024 nosync 2 $n5 0 /dev/nbd0 0" || return 1
	dmsetup table bn-mirror >"$CUR/table"
	SYS_DEV=/dev/mapper/bn-mirror
}
settle_dm-mirror() { :; }
down_dm-mirror() {
	dmsetup status bn-mirror >"$CUR/status-mirror" 2>&1
	dmsetup remove --retry bn-mirror
	nbd-client -d /dev/nbd0 >/dev/null 2>&1
	[ -s /tmp/bn-nbd.pid ] && kill "$(cat /tmp/bn-nbd.pid)" 2>/dev/null
	rm -f /tmp/bn-nbd.pid; sleep 0.5
}
settle_local() { :; }

# ---- workloads -------------------------------------------------------------
fio_args() { # WORKLOAD
	case $1 in
	qd1) echo "--rw=randwrite --bs=4k --iodepth=1" ;;
	qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
	seq) echo "--rw=write --bs=1M --iodepth=8" ;;
	esac
}
run_fio() { # DEV WORKLOAD OUTFILE
	# The guest's busy CPU time over fio's measured part (after its ramp):
	# OUTFILE.cpu holds the ticks at its start and end.
	( sleep "$RAMP"; cpu_busy >"$3.cpu"; link_tx "$sys" >"$3.pkts" ) &
	local sampler=$! profiler=
	if [ "$PERF" = 1 ]; then
		( sleep "$RAMP"; perf record -q -a -e cpu-clock -F 499 -o /tmp/bn-perf.data -- sleep "$RUNTIME" ) \
			>/dev/null 2>&1 &
		profiler=$!
	fi
	# shellcheck disable=SC2046
	timeout -k 10 $((RUNTIME + RAMP + 120)) fio --name="$2" --filename="$1" $(fio_args "$2") --ioengine=libaio \
		--direct=1 --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --randrepeat=0 \
		--norandommap --lat_percentiles=1 --output-format=json --output="$3" >/dev/null 2>"$3.err"
	local rc=$?
	cpu_busy >>"$3.cpu"
	link_tx "$sys" >>"$3.pkts"
	wait "$sampler" 2>/dev/null
	if [ -n "$profiler" ]; then
		wait "$profiler" 2>/dev/null
		perf report -i /tmp/bn-perf.data --stdio --no-children --sort dso,sym --percent-limit 0.5 2>&1 |
			grep -v '^#' | grep -v '^$' | head -80 >"$3.perf.txt"
		rm -f /tmp/bn-perf.data
	fi
	[ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] || return "$rc"
	# fio outlived its run by two minutes: I/O that never completes. Say
	# where everything stands and end this VM (its clean-up would wait on
	# the same I/O); scripts/bench.sh goes on in a new one.
	{
		echo "fio timed out ($rc): $2 on $1"
		for d in $(dmsetup ls | awk '{print $1}'); do echo "status $d: $(dmsetup status "$d")"; done
		for t in /proc/[0-9]*; do
			grep -qs '^State:.*D' "$t/status" || continue
			echo "--- D-state task ${t#/proc/} $(cat "$t/comm")"; cat "$t/stack" 2>/dev/null
		done
		echo w >/proc/sysrq-trigger; sleep 1; dmesg | tail -200
	} >"$CUR/hang.txt" 2>&1
	log "  $sys $2: I/O hung; diagnostics in raw/${CUR##*/}/hang.txt:"
	head -40 "$CUR/hang.txt" | sed 's/^/bench:   | /'
	trap - EXIT
	exit 3
}

cleanup() {
	set +e
	for d in bn-linear bn-mirror $S $D; do dmsetup remove --retry $d 2>/dev/null; done
	$DRBDSETUP down r0 2>/dev/null; $DRBDSETUP down r1 2>/dev/null
	nbd-client -d /dev/nbd0 >/dev/null 2>&1
	[ -s /tmp/bn-nbd.pid ] && kill "$(cat /tmp/bn-nbd.pid)" 2>/dev/null
	ip netns del $S 2>/dev/null; ip netns del $D 2>/dev/null
	ip link del bn-a 2>/dev/null
	ip rule add pref 0 lookup local 2>/dev/null; ip rule del pref 100 lookup local 2>/dev/null
	nullb_free_all
}
trap cleanup EXIT

# ---- the run -------------------------------------------------------------
# An oops ends the VM at once (scripts/bench.sh then goes on in a new one)
# instead of leaving the run hung behind a dead thread.
sysctl -qw kernel.panic_on_oops=1
grep -q '^dm_specmirror ' /proc/modules || insmod "$MODULE" || { log "insmod failed"; exit 1; }
links_up || { log "could not set up the links"; exit 1; }
python3 - "$OUT/guest.json" "$MODULE" "$RUNTIME" "$RAMP" "$SIZE_MB" "$QUICK" "$REPS" "$RATE" <<'PY'
import json, os, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception as e: return f"error: {e}"
out, mod, runtime, ramp, size, quick, reps, rate = sys.argv[1:]
json.dump({
    "uname": sh("uname -a"),
    "module": {"path": mod, "modinfo": sh(f"modinfo {mod}"), "sha256": sh(f"sha256sum {mod}").split()[0]},
    "drbd": sh("head -2 /proc/drbd"),
    "drbd_utils": sh("dpkg-query -W -f='${Version}' drbd-utils"),
    "nbd": sh("dpkg-query -W -f='${Version}' nbd-server nbd-client"),
    "fio": sh("fio --version"),
    "cpus": os.cpu_count(), "meminfo": sh("head -1 /proc/meminfo"),
    "runtime_s": int(runtime), "ramp_s": int(ramp), "device_mb": int(size), "quick": quick == "1",
    "reps": int(reps), "link_rate": rate or None,
    "devices": "null_blk via configfs, memory_backed=1, blocksize 4096, fresh per system",
    "link": "veth pair, netem delay RTT/2 on each end (no qdisc at RTT 0)",
}, open(out, "w"), indent=1)
PY

for rtt in $RTTS; do
	set_rtt "$rtt" || { log "netem for RTT $rtt ms failed"; exit 1; }
	log "RTT $rtt ms"
	for sys in $SYSTEMS; do
		CUR="$OUT/raw/rtt$rtt-$sys"; mkdir -p "$CUR"
		echo "$rtt $sys set-up" >"$OUT/current"
		SYS_DEV=
		up_"$sys" >"$CUR/up.log" 2>&1
		if [ -z "$SYS_DEV" ] || [ ! -b "$SYS_DEV" ]; then
			err=$(tr '\n' ' ' <"$CUR/up.log" | cut -c1-300)
			log "  $sys: not measured: set-up failed: $err"
			printf '{"rtt_ms": %s, "system": "%s", "error": %s}\n' "$rtt" "$sys" \
				"$(python3 -c 'import json,sys; print(json.dumps("set-up failed: " + sys.argv[1]))' "$err")" \
				>>"$OUT/runs.jsonl"
			down_"$sys" >/dev/null 2>&1; nullb_free_all
			continue
		fi
		for wl in $WORKLOADS; do
			if [[ " ${DMSM_BENCH_SKIP:-} " == *" $sys:$wl "* ]]; then
				log "  $sys $wl: skipped (DMSM_BENCH_SKIP)"
				printf '{"rtt_ms": %s, "system": "%s", "workload": "%s", "error": %s}\n' "$rtt" "$sys" "$wl" \
					"$(python3 -c 'import json,sys; print(json.dumps("skipped: " + sys.argv[1]))' "${DMSM_BENCH_SKIP_WHY:-DMSM_BENCH_SKIP}")" \
					>>"$OUT/runs.jsonl"
				continue
			fi
			for rep in $(seq 1 "$REPS"); do
			f="$CUR/$wl-r$rep.json"
			echo "$rtt $sys $wl" >"$OUT/current"; sync
			if run_fio "$SYS_DEV" "$wl" "$f"; then
				python3 - "$f" "$rtt" "$sys" "$wl" "$rep" "$CLK_TCK" >>"$OUT/runs.jsonl" <<'PY'
import json, sys
f, rtt, sysname, wl, rep, tck = sys.argv[1:]
j = json.load(open(f))["jobs"][0]["write"]
p = j["lat_ns"].get("percentile", {})
r = {"rtt_ms": int(rtt), "system": sysname, "workload": wl, "rep": int(rep), "fio": f.split("/raw/")[1],
     "iops": j["iops"], "bw_bytes": j["bw_bytes"], "lat_mean_ns": j["lat_ns"]["mean"],
     "slat_mean_ns": j["slat_ns"]["mean"], "clat_mean_ns": j["clat_ns"]["mean"],
     "lat_p50_ns": p.get("50.000000"), "lat_p99_ns": p.get("99.000000"), "ios": j["total_ios"]}
try:
    c = [int(x) for x in open(f + ".cpu").read().split()]
    if len(c) == 2 and j["io_bytes"] > 0:
        busy = (c[1] - c[0]) / int(tck)
        r["cpu_busy_s"] = busy
        r["cpu_s_per_gib"] = busy / (j["io_bytes"] / 2**30)
except (OSError, ValueError):
    pass
try:
    k = [int(x) for x in open(f + ".pkts").read().split()]
    if len(k) in (2, 4) and j["io_bytes"] > 0:
        n = len(k) // 2
        r["tx_pkts_per_mib"] = (k[n] - k[0]) / (j["io_bytes"] / 2**20)
        if n == 2 and j["runtime"] > 0:
            # fio's runtime (ms) is the measured part, as is the sample.
            r["link_bytes_s"] = (k[3] - k[1]) / (j["runtime"] / 1000)
except (OSError, ValueError, KeyError):
    pass
print(json.dumps(r))
PY
				log "  $sys $wl #$rep: $(tail -1 "$OUT/runs.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f IOPS, %.1f MB/s, mean %.0f us, %s CPU s/GiB" % (r["iops"], r["bw_bytes"] / 1e6, r["lat_mean_ns"] / 1e3, "%.1f" % r["cpu_s_per_gib"] if "cpu_s_per_gib" in r else "no"))')"
			else
				e=$(head -c 300 "$f.err" | tr '\n' ' ')
				log "  $sys $wl #$rep: not measured: fio failed: $e"
				printf '{"rtt_ms": %s, "system": "%s", "workload": "%s", "rep": %s, "error": %s}\n' "$rtt" "$sys" "$wl" "$rep" \
					"$(python3 -c 'import json,sys; print(json.dumps("fio failed: " + sys.argv[1]))' "$e")" \
					>>"$OUT/runs.jsonl"
			fi
			echo "$rtt $sys $wl, then waiting until idle" >"$OUT/current"
			settle_"$sys"
			done
		done
		echo "$rtt $sys tear-down" >"$OUT/current"
		down_"$sys" >"$CUR/down.log" 2>&1
		nullb_free_all
	done
done
rm -f "$OUT/current"
log "done"
