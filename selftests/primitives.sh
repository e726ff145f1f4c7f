#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The kernel glue (pages + crc32c under a rollback ring, loopback TCP in the
# caller's network namespace, kthread, irq-safe lock + condvar, shutdown of
# a blocked receive) passes the developer self-test run at load with
# dmsm_selftest=1; without the parameter the self-test does not run.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
ktap_print_header
ktap_set_plan 5
sm_unload 2>/dev/null
mark="dmsm-primitives-$$-$RANDOM"
echo "$mark" >/dev/kmsg
sm_check "insmod dmsm_selftest=1" insmod "$MODULE" dmsm_selftest=1
sm_check "dmesg: selftest passed" \
	bash -c "dmesg | sed -n '/$mark/,\$p' | grep -q 'specmirror: selftest passed'"
sm_check "dmesg: no selftest failure" \
	bash -c "! dmesg | sed -n '/$mark/,\$p' | grep -q 'specmirror: selftest'.*'fail'"
sm_check "rmmod" rmmod dm_specmirror
mark2="dmsm-primitives-off-$$-$RANDOM"
echo "$mark2" >/dev/kmsg
sm_check "no self-test without the parameter" \
	bash -c "insmod '$MODULE' && rmmod dm_specmirror && ! dmesg | sed -n '/$mark2/,\$p' | grep -q 'specmirror: selftest'"
ktap_finished
