#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Degraded mode (Documentation/dm-specmirror.rst, "Degraded mode"; the
# "Outage" scenario of issue 19). Two hosts (network namespaces joined by
# veth), two new zeroed devices (`initial_sync none`), the smallest
# useful ring (`ring_mb 4`) and `degrade_after 3`. fio writes 64 KiB
# random blocks, each once, 12 times the ring in all, at a steady rate;
# the veth goes down for 20 s in the middle of it.
#
# - `on_disconnect degrade` (the default): the status shows `degraded`
#   while the link is down, no write waits longer than degrade_after + 2 s
#   (fio's largest completion latency), and once the link is back the
#   source connects again, resyncs the chunks written meanwhile (at most
#   1.5 times the data fio wrote cross as resync) and the devices are
#   equal (cmp).
# - `completion sync` with the default policy: a write completes only
#   once the target applied it, so every write waits from the cut on;
#   still none waits longer than degrade_after + 2 s, and the devices are
#   equal once the link is back (cmp).
# - `on_disconnect block`: the writes stall for the outage instead (the
#   longest write takes more than degrade_after + 2 s), the source never
#   says degraded, and the devices are equal once it quiesced (cmp).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "ip not found"; exit "$KSFT_SKIP"; }
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 23
sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up

AFTER=3              # degrade_after, seconds
RING=4               # ring_mb
OUTAGE=${DMSM_DEGRADED_OUTAGE:-20} # seconds the veth is down
MB=${DMSM_DEGRADED_MB:-128}        # data devices
WMB=$((12 * RING))   # written: 48 MiB, each 64 KiB block once (fio's random map)
RATE=2m              # the writes span the outage (24 s of writing)
S=$PREFIX-dgsrc D=$PREFIX-dgdst

events() { dmsetup info -c --noheadings -o events "$1" | tr -d ' '; }

# devices: two new zeroed data devices into src and dst (not in a
# subshell: sm_loop records them for the cleanup).
devices() {
	src=$(sm_loop "$MB"); dst=$(sm_loop "$MB")
	SM_LOOPS+=("$src" "$dst")
	SM_FILES+=("$(losetup -nO BACK-FILE "$src")" "$(losetup -nO BACK-FILE "$dst")")
	n=$(sm_sectors "$src")
}
# pair OPTS: a target and a source with the optional arguments OPTS over
# src and dst, connected.
pair() {
	ip netns exec $SM_NS_DST dmsetup create $D --table "0 $n specmirror target $dst $(sm_meta "$dst") $SM_IP_DST:7860" &&
	ip netns exec $SM_NS_SRC dmsetup create $S --table "0 $n specmirror source $src $(sm_meta "$src") $SM_IP_DST:7860 $1" &&
	sm_state $S connected && sm_fields $S && [ "${SM_F[dirty]}" = 0 ]
}

# outage: fio writes WMB MiB through the source at RATE; once writes flow
# the veth is down for OUTAGE seconds. While it is down the state is
# polled: the seconds from the cut to the first `degraded` into SEEN
# (empty: never), the last state before the link came back into LAST.
# Waits for fio; its terse line into FIO.
outage() {
	local fout t_cut q0
	fout=$(mktemp /tmp/smt-out.XXXXXX); SM_FILES+=("$fout")
	sm_fields $S; q0=${SM_F[queued]}
	fio --name=outage --filename=/dev/mapper/$S --rw=randwrite --bs=64k --direct=1 \
		--ioengine=libaio --iodepth=8 --size=${WMB}M --rate=$RATE --randrepeat=0 \
		--output-format=terse --output="$fout" >/dev/null 2>&1 &
	local fpid=$!
	sm_until_f 60 $S "[ \${SM_F[queued]} -gt $((q0 + 16)) ]" || echo "# the writes did not start: $(dmsetup status $S)"
	t_cut=$EPOCHSECONDS SEEN= LAST=
	ip -n $SM_NS_SRC link set smt-veth-s down
	while [ $EPOCHSECONDS -lt $((t_cut + OUTAGE)) ]; do
		sm_fields $S && LAST=${SM_F[state]}
		[ -n "$SEEN" ] || [ "$LAST" != degraded ] || SEEN=$((EPOCHSECONDS - t_cut))
		sm_nap 0.2
	done
	echo "# link down $((EPOCHSECONDS - t_cut)) s: degraded after ${SEEN:-never} s; last: $(dmsetup status $S)"
	ip -n $SM_NS_SRC link set smt-veth-s up
	wait $fpid
	FIO=$(grep -m1 '^3;' "$fout")
	# Terse v3: 5 error, 47 KiB written, 56 clat max, 80 total latency max (us).
	IFS=';' read -ra F <<<"$FIO"
	FERR=${F[4]:-?} FKIB=${F[46]:-0} CLAT=${F[55]:-0} LAT=${F[79]:-0}
	echo "# fio: error=$FERR written=$FKIB KiB clat max=$((CLAT / 1000)) ms lat max=$((LAT / 1000)) ms"
	[ -n "$FIO" ] || cat "$fout"
}

fio_ok() { [ "$FERR" = 0 ] && [ "$FKIB" = $((WMB * 1024)) ] || { echo "fio: $FIO"; return 1; }; }
# back: connected again, every dirty chunk resynced, ring empty.
back() { sm_state $S connected 60 && sm_synced $S 300; }

# --- on_disconnect degrade (the default) ------------------------------------

devices
sm_check "degrade: create target and source (ring_mb $RING, degrade_after $AFTER): connected" \
	pair "6 initial_sync none ring_mb $RING degrade_after $AFTER"
e0=$(events $S)
outage
was_degraded() { [ -n "$SEEN" ] && [ "$LAST" = degraded ]; }
sm_check "degrade: the status says degraded while the link is down (from ${SEEN:-never} s after the cut)" was_degraded
bounded() { echo "longest write $((LAT / 1000)) ms"; [ "$LAT" -le $(((AFTER + 2) * 1000000)) ]; }
sm_check "degrade: no write took longer than degrade_after + 2 s (lat max $((LAT / 1000)) ms)" bounded
sm_check "degrade: fio wrote ${WMB} MiB without error" fio_ok
sm_check "degrade: the link is back: connected, dirty=0" back
counted() {
	sm_fields $S && echo "degraded_count=${SM_F[degraded_count]} events $e0 -> $(events $S)" &&
		[ "${SM_F[degraded_count]}" = 1 ] && [ "$(events $S)" -gt "$e0" ]
}
sm_check "degrade: degraded_count=1, a dm event raised" counted
sm_fields $S; RKIB=${SM_F[resync_kib]}
echo "# resync_kib=$RKIB for $FKIB KiB written ($((RKIB * 100 / (FKIB > 0 ? FKIB : 1)))%)"
resync_bounded() { [ -n "$RKIB" ] && [ "$RKIB" -gt 0 ] && [ $((2 * RKIB)) -le $((3 * FKIB)) ]; }
sm_check "degrade: resync_kib $RKIB <= 1.5 x the $FKIB KiB written" resync_bounded
sm_check "degrade: data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"
echo "# target: $(dmsetup status $D)"
removed() { dmsetup remove $S && dmsetup remove $D; }
sm_check "degrade: remove" removed

# --- completion sync: every write waits for the target until degraded ------

devices
sm_check "sync: create target and source (completion sync, degrade_after $AFTER): connected" \
	pair "8 initial_sync none ring_mb $RING degrade_after $AFTER completion sync"
outage
sm_check "sync: no write took longer than degrade_after + 2 s (lat max $((LAT / 1000)) ms)" bounded
sm_check "sync: fio wrote ${WMB} MiB without error" fio_ok
sm_check "sync: the link is back: connected, dirty=0" back
sm_check "sync: data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"
sm_check "sync: remove" removed

# --- on_disconnect block: the writes wait for the link ----------------------

devices
sm_check "block: create target and source (on_disconnect block): connected" \
	pair "8 initial_sync none ring_mb $RING degrade_after $AFTER on_disconnect block"
outage
never_degraded() { [ -z "$SEEN" ] && sm_fields $S && [ "${SM_F[degraded_count]}" = 0 ]; }
sm_check "block: never degraded (last state while down: $LAST)" never_degraded
stalled() { echo "longest write $((LAT / 1000)) ms"; [ "$LAT" -gt $(((AFTER + 2) * 1000000)) ]; }
sm_check "block: writes stalled longer than degrade_after + 2 s (lat max $((LAT / 1000)) ms)" stalled
sm_check "block: fio wrote ${WMB} MiB without error" fio_ok
sm_check "block: the link is back: connected, quiesced" back
sm_check "block: data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"
sm_check "block: remove" removed
echo "# $(basename "$0"): $SECONDS s"
ktap_finished
