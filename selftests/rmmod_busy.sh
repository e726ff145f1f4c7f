#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# rmmod is refused while a specmirror device exists, and clean after.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
ktap_print_header
ktap_set_plan 4
sm_load
dev=$(sm_loop 16)
n=$(sm_sectors "$dev")
sm_check "create" sm_create $PREFIX-busy "0 $n specmirror source $dev $(sm_meta $dev) 127.0.0.1:7791"
sm_check "rmmod refused while a device exists" bash -c "! rmmod dm_specmirror 2>/dev/null && grep -q '^dm_specmirror ' /proc/modules"
sm_check "remove" dmsetup remove $PREFIX-busy
sm_check "rmmod after the last device" rmmod dm_specmirror
ktap_finished
