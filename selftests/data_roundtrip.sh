#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Each role on its own (no peer): data written through a source reads back
# verified (fio crc32c) and lands unchanged on its data device (cmp), with
# discards and flushes; a target device reads its data device and refuses
# writes (the replica is read-only). DMSM_RT_MB: MiB fio writes (16).
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ktap_print_header
ktap_set_plan 9
sm_load
pat=$(mktemp /tmp/smt-pat.XXXXXX); SM_FILES+=("$pat")
dd if=/dev/urandom of="$pat" bs=1M count=8 status=none

dev=$(sm_loop 64)
n=$(sm_sectors "$dev")
name=$PREFIX-source
# Nobody listens on this port: the source keeps the records and retries.
sm_check "source: create (peer unreachable)" sm_create "$name" "0 $n specmirror source $dev $(sm_meta $dev) 127.0.0.1:7790"
sm_check "source: fio randwrite verify=crc32c" \
	fio --name=rt --filename=/dev/mapper/$name --rw=randwrite --bs=4k --size=${DMSM_RT_MB:-16}M \
		--direct=1 --ioengine=psync --verify=crc32c --verify_fatal=1 \
		--fsync=64 --randrepeat=0 --verify_state_save=0 --output-format=terse
sm_check "source: data device holds what was written (cmp)" bash -c "
	dd if=$pat of=/dev/mapper/$name bs=1M seek=32 oflag=direct conv=fsync status=none &&
	cmp <(dd if=$dev bs=1M skip=32 count=8 iflag=direct status=none) $pat"
sm_check "source: discard passes" blkdiscard -o 0 -l 1048576 /dev/mapper/$name
sm_check "source: remove" dmsetup remove "$name"

dev=$(sm_loop 64)
n=$(sm_sectors "$dev")
name=$PREFIX-target
dd if=$pat of=$dev bs=1M seek=16 oflag=direct conv=fsync status=none
sm_check "target: create" sm_create "$name" "0 $n specmirror target $dev $(sm_meta $dev) 127.0.0.1:7791"
sm_check "target: reads return the data device (cmp)" \
	bash -c "cmp <(dd if=/dev/mapper/$name bs=1M skip=16 count=8 iflag=direct status=none) $pat"
sm_check "target: writes through the target fail" \
	bash -c "! dd if=$pat of=/dev/mapper/$name bs=1M count=1 oflag=direct status=none 2>/dev/null"
sm_check "target: remove" dmsetup remove "$name"
ktap_finished
