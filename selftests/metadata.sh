#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The metadata device at table load (Documentation/dm-specmirror.rst,
# "Metadata device"): a zeroed device is formatted, a reload finds the
# same metadata, one damaged superblock copy is survived, and everything
# that is not this side's valid metadata is refused with its precise
# reason and left byte for byte as it was.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
sm_load
data=$(sm_loop 64)
n=$(sm_sectors "$data")
meta=$(sm_meta "$data")
# Inspected and damaged through the loop device's backing file, which is
# coherent with the bios dm sends through the loop (the loop device's own
# page cache is not).
metaf=/tmp/smt-img.meta-$(basename "$data")
S=$PREFIX-meta
src="source $data $meta 127.0.0.1:7797"

# gen: the gen= field of device $S.
gen() { sm_parse_status "$(dmsetup status $S)" && sm_f gen; }
# refused WHY TABLE_ARGS [LEN [FILE]]: the load fails with EINVAL, dm logs
# WHY, and FILE (the metadata device's backing file) is unchanged.
refused() {
	local why=$1 args=$2 len=${3:-$n} f=${4:-$metaf} before after out
	before=$(md5sum <"$f")
	out=$(dmsetup create "$S-bad" --table "0 $len specmirror $args" 2>&1) && {
		echo "loaded: $args"; dmsetup remove "$S-bad"; return 1; }
	dmsetup remove "$S-bad" >/dev/null 2>&1
	after=$(md5sum <"$f")
	grep -q "Invalid argument" <<<"$out" || { echo "not EINVAL: $out"; return 1; }
	dmesg | tail -n 20 | grep -q "specmirror: $why" || { echo "dmesg lacks: $why"; dmesg | tail -n 5; return 1; }
	[ "$before" = "$after" ] || { echo "the metadata device was written"; return 1; }
}
# corrupt BLOCK: flips one byte of metadata block BLOCK (4 KiB blocks).
corrupt() {
	local off=$(($1 * 4096 + 300)) b
	b=$(dd if="$metaf" bs=1 skip=$off count=1 status=none | od -An -tu1 | tr -d ' ')
	printf "\\x$(printf %02x $(((b ^ 0xff) & 0xff)))" | dd of="$metaf" bs=1 seek=$off conv=notrunc status=none
}

ktap_print_header
ktap_set_plan 12

sm_check "a zeroed metadata device is formatted at the first load" bash -c "
	dmsetup create $S --table '0 $n specmirror $src' &&
	dmesg | tail -n 20 | grep -q 'specmirror: formatted metadata device'"
g1=$(gen)
sm_check "status shows a non-zero generation ($g1)" bash -c "[[ '$g1' =~ ^[0-9a-f]{16}$ ]] && [ '$g1' != 0000000000000000 ]"
sm_check "a reload finds the same metadata" bash -c "
	dmsetup remove $S && dmsetup create $S --table '0 $n specmirror $src' && [ \"\$(dmsetup status $S | grep -o 'gen=[0-9a-f]*')\" = 'gen=$g1' ]"
sm_check "the printed table line loads again" bash -c "
	dmsetup table $S | dmsetup reload $S && dmsetup resume $S && [ \"\$(dmsetup status $S | grep -o 'gen=[0-9a-f]*')\" = 'gen=$g1' ]"
dmsetup remove $S

corrupt 0
sm_check "one damaged superblock copy: the other one is used" bash -c "
	dmsetup create $S --table '0 $n specmirror $src' && [ \"\$(dmsetup status $S | grep -o 'gen=[0-9a-f]*')\" = 'gen=$g1' ]"
dmsetup remove $S

sm_check "refused: a target line on a source's metadata" \
	refused "Metadata device belongs to the other role" "target $data $meta 127.0.0.1:7797"
sm_check "refused: another data size" \
	refused "Metadata device describes a data device of another size" "$src" $((n / 2))
sm_check "refused: another chunk_size" \
	refused "Metadata device was formatted with another chunk_size" "$src 2 chunk_size 256"
corrupt 1
sm_check "refused: both superblock copies damaged" \
	refused "Metadata device: both superblock copies are damaged" "$src"
dd if=/dev/urandom of="$metaf" bs=4096 count=4 conv=notrunc status=none
sm_check "refused: a device holding something else" \
	refused "Metadata device holds no specmirror superblock and is not zeroed" "$src"
# 64 KiB: 16 blocks, where 64 MiB of data in 64 KiB chunks needs 67.
smallf=$(mktemp /tmp/smt-img.XXXXXX); truncate -s 64K "$smallf"
small=$(losetup -f --show "$smallf"); SM_LOOPS+=("$small"); SM_FILES+=("$smallf")
sm_check "refused: a metadata device too small" \
	refused "Metadata device too small" "source $data $small 127.0.0.1:7797" "$n" "$smallf"
# After an operator zeroes the superblocks, the next load formats anew.
dd if=/dev/zero of="$metaf" bs=4096 count=2 conv=notrunc status=none
sm_check "zeroed again: formatted with a new generation" bash -c "
	dmsetup create $S --table '0 $n specmirror $src' && [ \"\$(dmsetup status $S | grep -o 'gen=[0-9a-f]*')\" != 'gen=$g1' ]"
dmsetup remove $S
ktap_finished
