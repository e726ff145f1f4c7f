#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Data written through each role reads back verified (fio crc32c) and
# lands unchanged on the data device (cmp); discards and flushes pass.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ktap_print_header
ktap_set_plan 10
sm_load
for role in source target; do
	dev=$(sm_loop 64)
	n=$(sm_sectors "$dev")
	name=$PREFIX-$role
	addr=127.0.0.1:7790
	sm_check "$role: create" sm_create "$name" "0 $n specmirror $role $dev $addr"
	sm_check "$role: fio randwrite verify=crc32c" \
		fio --name=rt --filename=/dev/mapper/$name --rw=randwrite --bs=4k --size=16M \
			--direct=1 --ioengine=psync --verify=crc32c --verify_fatal=1 \
			--fsync=64 --randrepeat=0 --output-format=terse
	pat=$(mktemp /tmp/smt-pat.XXXXXX); SM_FILES+=("$pat")
	dd if=/dev/urandom of="$pat" bs=1M count=8 status=none
	sm_check "$role: data device holds what was written (cmp)" bash -c "
		dd if=$pat of=/dev/mapper/$name bs=1M seek=32 oflag=direct conv=fsync status=none &&
		cmp <(dd if=$dev bs=1M skip=32 count=8 iflag=direct status=none) $pat"
	sm_check "$role: discard passes" blkdiscard -o 0 -l 1048576 /dev/mapper/$name
	sm_check "$role: remove" dmsetup remove "$name"
done
ktap_finished
