#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Source power loss (Documentation/dm-specmirror.rst, "Activity log").
# The source's data and metadata devices sit on dm-log-writes, which logs a
# write only once a flush covered it (or at once with FUA). While host
# writes stream through a source with a small activity log, MARKS times,
# the source's two devices and the target's (through dm-linear) are
# suspended: both logs get a mark, the target's devices are copied as
# they are (the target keeps running, its cache with it), and all resume.
# Then, for every mark, the source's two devices are rebuilt as a power
# loss at that mark would leave them (log_replay.py --mark: what a flush
# covered, FUA writes, nothing else), the target's copy of that moment is
# put back, and a new source is loaded on the rebuilt devices. The target may hold writes that the crashed source lost, and
# lack some it kept: the resync of the activity log's regions and the
# dirty bitmap must bring it back to the source's image (cmp), and stay
# within them.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
MARKS=${DMSM_SRC_POWERLOSS_MARKS:-10}
ktap_print_header
ktap_set_plan $((6 + 3 * MARKS + 1))
sm_load
MB=32
# Regions of 256 KiB (4 chunks of 64 KiB) and a log of 8 of them: the
# random load over 128 regions keeps evicting, and flushing.
AL=8 REGION=512 CHUNKS_PER_REGION=4
sdata=$(sm_loop $MB); smeta=$(sm_loop 4); dlog=$(sm_loop 256); mlog=$(sm_loop 64)
tdata=$(sm_loop $MB); tmeta=$(sm_loop 4)
rdata=$(sm_loop $MB); rmeta=$(sm_loop 4)
n=$(sm_sectors "$sdata") nm=$(sm_sectors "$smeta")
S=$PREFIX-ssrc D=$PREFIX-sdst LD=$PREFIX-sld LM=$PREFIX-slm TD=$PREFIX-std TM=$PREFIX-stm
# The target's data and metadata at each mark.
snaps=()
for i in $(seq 1 "$MARKS"); do
	f=$(mktemp /tmp/smt-img.XXXXXX) g=$(mktemp /tmp/smt-img.XXXXXX)
	SM_FILES+=("$f" "$g"); snaps+=("$f $g")
done
source_on() {
	sm_create "$S" "0 $n specmirror source $1 $2 127.0.0.1:7862 6 initial_sync none region_size $REGION al_regions $AL"
}
target_on() { sm_create "$D" "0 $n specmirror target $1 $2 127.0.0.1:7862 2 region_size $REGION"; }
# on_disk META: the chunks set in the dirty bitmap of a source's metadata
# device (Documentation/metadata-format.rst: the blocks after the two
# superblock copies, 16-byte header, one block for 32 MiB in 64 KiB chunks).
on_disk() {
	python3 -c 'import sys; b = open(sys.argv[1], "rb").read()[2 * 4096 + 16:3 * 4096]; print(sum(bin(x).count("1") for x in b))' "$1"
}
# save DEV FILE, restore FILE DEV: device contents to a file and back.
save() { dd if="$1" of="$2" bs=1M iflag=direct status=none; }
restore() { dd if="$1" of="$2" bs=1M oflag=direct status=none; }
zero() { dd if=/dev/zero of="$1" bs=1M count="$2" oflag=direct status=none; }

created() {
	sm_create "$LD" "0 $n log-writes $sdata $dlog" &&
		sm_create "$LM" "0 $nm log-writes $smeta $mlog" &&
		sm_create "$TD" "0 $n linear $tdata 0" && sm_create "$TM" "0 $nm linear $tmeta 0" &&
		target_on "/dev/mapper/$TD" "/dev/mapper/$TM" && source_on "/dev/mapper/$LD" "/dev/mapper/$LM"
}
# mark I: one moment on every device (suspend waits for what is in
# flight; the source's first, so the target holds nothing the source had
# not written): the mark in both logs, the target's devices copied.
mark() {
	local rc=0 snap
	read -ra snap <<<"${snaps[$(($1 - 1))]}"
	dmsetup suspend --nolockfs "$LD" && dmsetup suspend --nolockfs "$LM" &&
		dmsetup suspend --nolockfs "$TD" && dmsetup suspend --nolockfs "$TM" &&
		dmsetup message "$LD" 0 mark "m$1" && dmsetup message "$LM" 0 mark "m$1" &&
		save "$tdata" "${snap[0]}" && save "$tmeta" "${snap[1]}" || rc=1
	dmsetup resume "$TM"; dmsetup resume "$TD"; dmsetup resume "$LM"; dmsetup resume "$LD"
	return $rc
}
marks() {
	local i
	for i in $(seq 1 "$MARKS"); do
		sm_nap "0.$((RANDOM % 6 + 3))"
		mark "$i" || return 1
	done
}
torn_down() {
	dmsetup remove "$S" && dmsetup remove "$D" && dmsetup remove "$LD" && dmsetup remove "$LM" &&
		dmsetup remove "$TD" && dmsetup remove "$TM"
}

sm_check "create the source (data and metadata on dm-log-writes) and the target" created
in_sync() { sm_state "$S" connected 60 && sm_synced "$S" 60; }
sm_check "connected and in sync" in_sync
sm_load_start "/dev/mapper/$S" --rate=2m
sm_check "$MARKS marks in both logs, the target copied at each" marks
sm_check_load "host writes completed without error"
echo "# source: $(dmsetup status "$S")"
sm_check "the stream quiesces" sm_quiesce "$S" 120
sm_check "devices removed" torn_down

ahead=0
for i in $(seq 1 "$MARKS"); do
	# The devices of a source that lost power at mark i, and the target
	# as it was then.
	read -ra snap <<<"${snaps[$((i - 1))]}"
	rebuilt() {
		zero "$rdata" "$MB" && zero "$rmeta" 4 &&
			python3 "$DIR/log_replay.py" --mark "m$i" "$dlog" "$rdata" &&
			python3 "$DIR/log_replay.py" --mark "m$i" "$mlog" "$rmeta" &&
			restore "${snap[0]}" "$tdata" && restore "${snap[1]}" "$tmeta"
	}
	sm_check "mark $i: the source's devices rebuilt at the mark, the target as it was" rebuilt
	sm_equal "$rdata" "$tdata" >/dev/null 2>&1 || ahead=$((ahead + 1))
	# The chunks set on the rebuilt metadata device: the activity log's
	# regions and the dirty bits (a slow guest may have gone degraded).
	# The resync ends, and sends no more than those.
	set_bits=$(on_disk "$rmeta")
	within() {
		target_on "$tdata" "$tmeta" && source_on "$rdata" "$rmeta" &&
			sm_state "$S" connected 60 && sm_synced "$S" 120 && sm_fields "$S" || return 1
		[ "${SM_F[resync_kib]}" -le $((set_bits * 64)) ]
	}
	sm_check "mark $i: a new source resyncs within the activity log and the bitmap" within
	sm_fields "$S" && echo "# mark $i: $set_bits chunks set on disk (log: at most $((AL * CHUNKS_PER_REGION))); resync_kib=${SM_F[resync_kib]} rule=${SM_F[rule]}"
	equal() { dmsetup remove "$S" && dmsetup remove "$D" && sm_equal "$rdata" "$tdata"; }
	sm_check "mark $i: the target equals the crashed source's devices (cmp)" equal
done
# Rounds where the saved target differed from the rebuilt source: without
# any, nothing was recovered.
sm_check "the target differed from the crashed source at $ahead of $MARKS marks" [ "$ahead" -gt 0 ]
ktap_finished
