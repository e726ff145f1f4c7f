#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The resync (Documentation/dm-specmirror.rst, "Resync"): a source whose
# data device already holds data the target lacks, paired with
# `initial_sync none` (the operator wrongly asserts the devices are equal,
# so the handshake sends nothing), is brought in line by
# `dmsetup message <source> 0 resync`, while the host keeps writing; the
# dirty bitmap is on the metadata device, so a resync interrupted by a
# table reload resumes after it; a dm event marks its start and its end.
# Every data check ends with cmp of the two data devices.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ktap_print_header
ktap_set_plan 21
sm_load
MB=${DMSM_RESYNC_MB:-32}
src=$(sm_loop "$MB"); dst=$(sm_loop "$MB")
n=$(sm_sectors "$src")
chunks=$(((n + 127) / 128))
S=$PREFIX-rsrc D=$PREFIX-rdst
sbase="source $src $(sm_meta "$src") 127.0.0.1:7801"
stable="$sbase 2 initial_sync none"
ttable="target $dst $(sm_meta "$dst") 127.0.0.1:7801"
# Data the target never saw: written to the source's data device before
# the table exists (a device that held data before it was mirrored).
dd if=/dev/urandom of="$src" bs=1M count="$MB" oflag=direct status=none

events() { dmsetup info -c --noheadings -o events "$1" | tr -d ' '; }

created() {
	sm_create "$D" "0 $n specmirror $ttable" && sm_create "$S" "0 $n specmirror $stable" &&
		sm_state "$S" connected && sm_fields "$S" && [ "${SM_F[dirty]}" = 0 ]
}
differ() { ! sm_equal "$src" "$dst" >/dev/null 2>&1; }
progress() {
	local line
	line=$(dmsetup status "$S") && sm_parse_status "$line" && echo "$line" &&
		[ "${SM_F[dirty]}" -gt 0 ] && [[ "${SM_F[syncing]}" =~ ^[0-9]+/$chunks$ ]]
}
evented() { [ "$(events "$S")" -gt "$e0" ]; }
all_dirty() { sm_nap 1; sm_fields "$S" && [ "${SM_F[dirty]}" = "$chunks" ]; }
reloaded() {
	dmsetup remove "$S" && sm_create "$S" "0 $n specmirror $stable" &&
		sm_fields "$S" && [ "${SM_F[dirty]}" -gt 0 ] &&
		dmesg | tail -n 20 | grep -q 'chunks dirty, resynced once connected'
}

sm_check "create target and source: connected, nothing dirty" created
sm_check "the devices differ before the resync" differ
# Host writes run through the whole resync: the load starts first, and the
# resync is asked for once its writes reach the source.
e0=$(events "$S")
sm_fields "$S"; q0=${SM_F[queued]}
sm_load_start "/dev/mapper/$S" --size=$((MB / 2))M
sm_until_f 120 "$S" "[ \${SM_F[queued]} -gt $((q0 + 16)) ]" || echo "# the load did not start: $(dmsetup status "$S")"
dmsetup message "$S" 0 resync
sm_check "resync: status shows dirty chunks and progress" progress
sm_nap 2
sm_check_load "host writes during the resync completed without error"
sm_check "resync ends (dirty=0) and the stream quiesces" sm_synced "$S" 300
sm_check "a dm event marked the resync" evented
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"

# Interrupted: no link while the resync is requested, then the table is
# removed and loaded again; the dirty bitmap on the metadata device says
# what is left.
dd if=/dev/urandom of="$src" bs=1M count=4 seek=8 oflag=direct status=none
dmsetup message "$S" 0 disconnect
dmsetup message "$S" 0 resync
sm_check "disconnected: the resync waits with every chunk dirty" all_dirty
sm_check "remove and load the source again: the bitmap is still dirty" reloaded
sm_check "the resumed resync ends" sm_synced "$S" 300
sm_check "data devices equal after the interrupted resync (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"

# Host write throughput with no resync and during a resync of every chunk
# (a measurement, shown, not checked: the resync yields to host writes).
bw() { fio --name=bw --filename="/dev/mapper/$S" --rw=randwrite --bs=64k --direct=1 \
	--ioengine=libaio --iodepth=8 --size=$((MB / 2))M --runtime=3 --time_based \
	--output-format=terse 2>/dev/null | cut -d';' -f48; }
idle=$(bw)
dmsetup message "$S" 0 resync
t0=$EPOCHSECONDS
busy=$(bw)
sm_synced "$S" 300 >/dev/null
echo "# host writes: ${idle:-?} KiB/s with no resync, ${busy:-?} KiB/s during a resync of $chunks chunks (which took $((EPOCHSECONDS - t0)) s)"

# sync_rate caps the resync: at 1024 KiB/s, 2 s move at most about 2 MiB
# (plus a piece), and something moves.
capped() {
	local t0 line done_
	dmsetup remove "$S" && sm_create "$S" "0 $n specmirror $sbase 4 initial_sync none sync_rate 1024" && sm_state "$S" connected || return 1
	dmsetup message "$S" 0 resync
	t0=$EPOCHSECONDS
	sm_nap 2
	line=$(dmsetup status "$S") && sm_parse_status "$line" && echo "$line"
	done_=${SM_F[syncing]%/*}
	echo "# sync_rate 1024: $done_ chunks of 64 KiB in $((EPOCHSECONDS - t0)) s" | tee -a "$rates"
	[ "$done_" -gt 0 ] && [ $((done_ * 64)) -le $(((EPOCHSECONDS - t0 + 1) * 1024 + 64)) ]
}
rates=$(mktemp /tmp/smt-out.XXXXXX); SM_FILES+=("$rates")
sm_check "sync_rate 1024 KiB/s caps the resync" capped
cat "$rates"
uncapped() { dmsetup remove "$S" && sm_create "$S" "0 $n specmirror $stable" && sm_synced "$S" 300; }
sm_check "loaded again without the cap, the resync resumes and ends" uncapped
sm_check "data devices equal after the capped resync (cmp)" sm_equal "$src" "$dst"

# A reload with records the target never acknowledged: the new table
# starts a new ring, and the chunks of the old ring's records are dirty in
# the bitmap it saved when it stopped.
unacked() {
	local line
	dmsetup message "$S" 0 disconnect &&
		dd if=/dev/urandom of="/dev/mapper/$S" bs=64k count=64 seek=100 oflag=direct status=none &&
		line=$(dmsetup status "$S") && sm_parse_status "$line" && echo "$line" &&
		[ "${SM_F[lag]}" -gt 4000000 ] &&
		dmsetup remove "$S" && sm_create "$S" "0 $n specmirror $stable" &&
		dmesg | tail -n 30 | grep "specmirror: metadata device .*: 64 of $chunks chunks dirty"
}
sm_check "4 MiB unacknowledged, then a reload: their chunks are dirty" unacked
sm_check "the resync after the reload ends" sm_synced "$S" 300
sm_check "data devices equal after the reload (cmp)" sm_equal "$src" "$dst"

# A module reload with records the target never acknowledged (issue 19):
# both tables are removed (the source saves the chunks of its ring's
# records as dirty when it stops), rmmod, insmod, both tables again; the
# resync sends those chunks, not the device.
modreload() {
	local line k0
	sm_fields "$S"; k0=${SM_F[resync_kib]}
	dmsetup message "$S" 0 disconnect &&
		dd if=/dev/urandom of="/dev/mapper/$S" bs=64k count=64 seek=300 oflag=direct status=none &&
		line=$(dmsetup status "$S") && sm_parse_status "$line" && echo "$line" &&
		[ "${SM_F[lag]}" -gt 4000000 ] &&
		dmsetup remove "$S" && dmsetup remove "$D" && rmmod dm_specmirror && insmod "$MODULE" &&
		sm_create "$D" "0 $n specmirror $ttable" && sm_create "$S" "0 $n specmirror $stable" &&
		dmesg | tail -n 30 | grep "specmirror: metadata device .*: 64 of $chunks chunks dirty"
}
sm_check "4 MiB unacknowledged, then a module reload: their chunks are dirty" modreload
bounded() {
	sm_synced "$S" 300 && sm_fields "$S" && echo "resync_kib=${SM_F[resync_kib]}" &&
		[ "${SM_F[resync_kib]}" -le 4096 ]
}
sm_check "the resync after the module reload sends those 4 MiB, not the device" bounded
sm_check "data devices equal after the module reload (cmp)" sm_equal "$src" "$dst"

# A range: bytes changed under the source (on its data device, as after
# an unrepaired write), then `resync <sector> <sectors>` for that range.
ranged() {
	dd if=/dev/urandom of="$src" bs=4k count=3 seek=1001 oflag=direct status=none &&
		! sm_equal "$src" "$dst" >/dev/null 2>&1 &&
		! dmsetup message "$S" 0 resync "$n" 8 2>/dev/null &&
		! dmsetup message "$S" 0 resync 0 0 2>/dev/null &&
		dmsetup message "$S" 0 resync $((1001 * 8)) 24 && sm_synced "$S" 300 && sm_equal "$src" "$dst"
}
sm_check "resync <sector> <sectors> brings a range in line (cmp); bad ranges refused" ranged
dmsetup remove "$S"; dmsetup remove "$D"
ktap_finished
