#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The module loads, registers target "specmirror" 0.8.2, and unloads.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
ktap_print_header
ktap_set_plan 4
sm_unload 2>/dev/null
sm_check "insmod" insmod "$MODULE"
sm_check "target specmirror v0.8.2 registered" \
	bash -c "dmsetup targets | grep -Eq '^specmirror +v0\.8\.2$'"
sm_check "rmmod" rmmod dm_specmirror
sm_check "target gone after rmmod" bash -c "! dmsetup targets | grep -q '^specmirror'"
ktap_finished
