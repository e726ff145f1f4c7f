#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Generations and the handshake's rule (Documentation/dm-specmirror.rst,
# "Generations and the initial sync"): a new target is synced in full
# while the host writes (reads through it fail until it is consistent); a
# sync cut by link drops and a source reload resumes; a reloaded target
# resumes without a sync; a target whose metadata was replaced is synced
# in full again; `initial_sync none` sends nothing; a target of another
# pair is refused and left untouched. Every data check ends with cmp.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ktap_print_header
ktap_set_plan 15
sm_load
MB=${DMSM_GEN_MB:-32}
src=$(sm_loop "$MB"); dst=$(sm_loop "$MB")
n=$(sm_sectors "$src")
S=$PREFIX-gsrc D=$PREFIX-gdst
smeta=$(sm_meta "$src"); tmeta=$(sm_meta "$dst")
tmetaf=/tmp/smt-img.meta-$(basename "$dst")
sbase="source $src $smeta 127.0.0.1:7802"
ttable="target $dst $tmeta 127.0.0.1:7802"
# What the source's device held before it was mirrored.
dd if=/dev/urandom of="$src" bs=1M count="$MB" oflag=direct status=none

# consistent: the target says its image is consistent.
consistent() { sm_until_f 30 "$D" '[ "${SM_F[image]}" = consistent ]' || { dmsetup status "$D"; return 1; }; }
rule() { sm_fields "$1" && [ "${SM_F[rule]}" = "$2" ] || { echo "rule=${SM_F[rule]}, expected $2"; return 1; }; }

# 1. A new target: the initial sync copies everything (capped, so that
# it is seen running), while fio writes and verifies through the source.
during() {
	local line
	sm_create "$D" "0 $n specmirror $ttable" &&
		sm_create "$S" "0 $n specmirror $sbase 2 sync_rate 8192" &&
		sm_until_f 30 "$S" '[[ "${SM_F[syncing]}" =~ ^[0-9]+/ ]]' &&
		line=$(dmsetup status "$D") && echo "# target: $line" &&
		sm_parse_status "$line" && [ "${SM_F[image]}" = inconsistent ] && [ "${SM_F[rule]}" = initial ]
}
sm_check "a new target: the initial sync starts, the target says inconsistent" during
sm_check "reads through an inconsistent target fail" \
	bash -c "! dd if=/dev/mapper/$D of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null"
sm_check "fio verify=crc32c writes through the source during the sync" \
	fio --name=verify --filename=/dev/mapper/$S --rw=randwrite --bs=64k --size=8M --offset=4M \
	--direct=1 --ioengine=libaio --iodepth=8 --verify=crc32c --do_verify=1 --output-format=terse
dmsetup message "$S" 0 resync >/dev/null 2>&1 # (no-op: everything is dirty already)
uncap() { dmsetup remove "$S" && sm_create "$S" "0 $n specmirror $sbase" && sm_synced "$S" 300; }
sm_check "the sync ends (dirty=0)" uncap
readable() { consistent && dd if="/dev/mapper/$D" of=/dev/null bs=4k count=1 iflag=direct status=none; }
sm_check "the target says consistent, and reads go" readable
sm_check "data devices equal after the initial sync (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $S)"

# 2. A target removed and loaded again: the handshake resumes.
reload_target() { dmsetup remove "$D" && sm_create "$D" "0 $n specmirror $ttable" && sm_state "$S" connected && rule "$S" resume && sm_synced "$S" 30; }
sm_check "a reloaded target resumes the stream, nothing dirty" reload_target

# 3. A sync cut by five link drops and one source reload resumes where it
# was; what the resync sends stays within 1.2 times the device.
cut_sync() {
	local i kib
	dmsetup remove "$S" && dmsetup remove "$D" &&
		dd if=/dev/zero of="$tmetaf" bs=4k count=2 conv=notrunc status=none &&
		sm_create "$D" "0 $n specmirror $ttable" &&
		sm_create "$S" "0 $n specmirror $sbase 2 sync_rate 2048" || return 1
	sm_state "$S" connected && rule "$S" initial || return 1
	for i in 1 2 3 4 5; do
		sm_nap 0.3
		dmsetup message "$S" 0 disconnect; sm_nap 0.2; dmsetup message "$S" 0 connect
	done
	sm_fields "$S"
	kib=${SM_F[resync_kib]}
	echo "# before the reload: $(dmsetup status "$S")"
	dmsetup remove "$S" && sm_create "$S" "0 $n specmirror $sbase" && sm_synced "$S" 300 || return 1
	sm_fields "$S"
	echo "# after 5 cuts and a source reload (rule ${SM_F[rule]}): $kib + ${SM_F[resync_kib]} KiB resynced, resends ${SM_F[resends]}; the device is $((MB * 1024)) KiB" | tee -a "$notes"
	kib=$((kib + SM_F[resync_kib]))
	[ "$kib" -le $((MB * 1024 * 12 / 10)) ]
}
notes=$(mktemp /tmp/smt-out.XXXXXX); SM_FILES+=("$notes")
sm_check "a target with blank metadata: full sync, cut 5 times and reloaded, resumes" cut_sync
cat "$notes"
sm_check "data devices equal after the interrupted sync (cmp)" sm_equal "$src" "$dst"
sm_check "the target is consistent again" consistent

# 4. initial_sync none over two new zeroed devices: nothing is sent.
none_pair() {
	local s2 d2 line
	s2=$(sm_loop 16); d2=$(sm_loop 16)
	dmsetup create "$S-n" --table "0 $(sm_sectors "$s2") specmirror source $s2 $(sm_meta "$s2") 127.0.0.1:7803 2 initial_sync none" &&
		dmsetup create "$D-n" --table "0 $(sm_sectors "$d2") specmirror target $d2 $(sm_meta "$d2") 127.0.0.1:7803" &&
		sm_state "$S-n" connected && sm_until_f 30 "$D-n" '[ "${SM_F[image]}" = consistent ]' &&
		line=$(dmsetup status "$S-n") && echo "# $line" && sm_parse_status "$line" &&
		[ "${SM_F[resync_kib]}" = 0 ] && [ "${SM_F[dirty]}" = 0 ] && [ "${SM_F[rule]}" = initial ] &&
		sm_equal "$s2" "$d2"
	local rc=$?
	dmsetup remove "$S-n"; dmsetup remove "$D-n"
	return $rc
}
sm_check "initial_sync none: two zeroed devices, nothing sent, consistent (cmp)" none_pair

# 5. A source of another pair (new metadata) meets this target: refused
# by both sides, and nothing on the target changes.
unrelated() {
	local s3 sum0 sum1
	s3=$(sm_loop "$MB")
	dmsetup remove "$S" || return 1
	sum0=$(md5sum <"$dst")
	dmsetup create "$S-u" --table "0 $n specmirror source $s3 $(sm_meta "$s3") 127.0.0.1:7802" &&
		sm_state "$S-u" refused:unrelated || { dmsetup status "$S-u"; dmsetup remove "$S-u"; return 1; }
	sm_nap 2
	sum1=$(md5sum <"$dst")
	dmsetup status "$D" | grep -q 'refused:unrelated\|listening' || { dmsetup status "$D"; dmsetup remove "$S-u"; return 1; }
	dmsetup remove "$S-u"
	[ "$sum0" = "$sum1" ]
}
sm_check "a source of another pair is refused (refused:unrelated), the target unchanged" unrelated
own_source() { sm_create "$S" "0 $n specmirror $sbase" && sm_state "$S" connected && rule "$S" resume && sm_synced "$S" 60; }
sm_check "the pair's own source reconnects and resumes" own_source
sm_check "data devices equal at the end (cmp)" sm_equal "$src" "$dst"

# 6. Status and table: the generation fields are there.
fields() { sm_fields "$S" && [[ "${SM_F[bitmap_base]}" =~ ^[0-9a-f]{16}$ ]] && [[ "${SM_F[gen]}" =~ ^[0-9a-f]{16}$ ]]; }
sm_check "source status: gen=, bitmap_base=, rule=" fields
dmsetup remove "$S"; dmsetup remove "$D"
ktap_finished
