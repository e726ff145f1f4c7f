#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# A source and a target device come and go; status and table say what
# they are, and the table line read back recreates the device.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ktap_print_header
ktap_set_plan 9
sm_load
src=$(sm_loop 32); dst=$(sm_loop 32)
n=$(sm_sectors "$src")
sm_check "create source" sm_create $PREFIX-src "0 $n specmirror source $src $(sm_meta $src) 127.0.0.1:7789 4 region_size 1024 mode lock-sync"
sm_check "create target" sm_create $PREFIX-dst "0 $n specmirror target $dst $(sm_meta $dst) 0.0.0.0:7789 2 ring_mb 8"
sm_check "source status names role and device" \
	bash -c "dmsetup status $PREFIX-src | grep -Eq '^0 $n specmirror source [0-9]+:[0-9]+ '"
sm_check "target status names role and device" \
	bash -c "dmsetup status $PREFIX-dst | grep -Eq '^0 $n specmirror target [0-9]+:[0-9]+ '"
sm_check "source table read back" \
	bash -c "dmsetup table $PREFIX-src | grep -Eq '^0 $n specmirror source [0-9]+:[0-9]+ [0-9]+:[0-9]+ 127\.0\.0\.1:7789 4 region_size 1024 mode lock-sync$'"
sm_check "target table read back" \
	bash -c "dmsetup table $PREFIX-dst | grep -Eq '^0 $n specmirror target [0-9]+:[0-9]+ [0-9]+:[0-9]+ 0\.0\.0\.0:7789 2 ring_mb 8$'"
# The printed table must load again as-is (reload into the same device).
sm_check "table line reloads" bash -c "dmsetup table $PREFIX-src | cut -d' ' -f1- | dmsetup reload $PREFIX-src && dmsetup resume $PREFIX-src"
sm_check "remove source" dmsetup remove $PREFIX-src
sm_check "remove target" dmsetup remove $PREFIX-dst
ktap_finished
