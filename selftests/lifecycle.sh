#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Suspend, resume, disconnect, reconnect and remove with I/O in flight and
# with the peer unreachable; authentication with a shared secret. Each
# scenario ends with the two data devices equal (invariant I1 in Documentation/dm-specmirror.rst) or, for the
# failure cases, with the state status promises.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 17
sm_load
sm_netns_down
sm_netns_up || { ktap_exit_fail_msg "cannot create the network namespaces"; }
src=$(sm_loop 96); dst=$(sm_loop 96)
n=$(sm_sectors "$src")
S=$PREFIX-src D=$PREFIX-dst
tgt_line="0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7810"
src_line="0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7810"
up_target() { ip netns exec $SM_NS_DST dmsetup create $D --table "$tgt_line${1:+ $1}"; }
up_source() { ip netns exec $SM_NS_SRC dmsetup create $S --table "$src_line${1:+ $1}"; }
# state DEV WORD: waits up to 20 s for DEV's status to show WORD as state.
state() {
	local i
	for ((i = 0; i < 200; i++)); do
		[ "$(dmsetup status "$1" | cut -d' ' -f6)" = "$2" ] && return 0
		sleep 0.1
	done
	echo "state of $1 is not $2: $(dmsetup status "$1")"; return 1
}
load() { # load SECONDS: random writes through the source in the background
	fio --name=l --filename=/dev/mapper/$S --rw=randwrite --bsrange=4k-64k --direct=1 \
		--ioengine=libaio --iodepth=8 --size=64M --time_based --runtime="$1" \
		--randrepeat=0 --output-format=terse >/dev/null 2>&1 &
}

pair() { up_target "$1" && up_source "$2" && state $S "$3"; }
# degrade_after 60: the admin disconnect below must keep the writes in the
# ring however slowly dd runs (the default, 5 s, would degrade the source;
# selftests/degraded.sh covers that).
sm_check "create target and source; connected" pair "" "2 degrade_after 60" connected

load 8
sleep 2
sm_check "suspend and resume the source under load" bash -c "dmsetup suspend $S && sleep 1 && dmsetup resume $S"
sleep 1
sm_check "suspend and resume the target under load" bash -c "dmsetup suspend $D && sleep 1 && dmsetup resume $D"
wait
sm_check "after suspends: quiesce" sm_quiesce $S 120
sm_check "after suspends: devices equal" sm_equal "$src" "$dst"

disconnect() { dmsetup message $S 0 disconnect && state $S disconnected; }
sm_check "disconnect message" disconnect
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=8 seek=40 oflag=direct conv=fsync status=none
held() { [ "$(sm_status_field $S lag)" -gt 8000000 ]; }
sm_check "writes while disconnected stay in the ring" held
reconnect() { dmsetup message $S 0 connect && sm_quiesce $S 60; }
sm_check "connect message; the ring drains" reconnect
sm_check "after reconnect: devices equal" sm_equal "$src" "$dst"

# The target goes away mid-stream and comes back as a new table.
load 6
sleep 2
sm_check "remove the target under load" dmsetup remove $D
sleep 1
retarget() { up_target && state $S connected; }
sm_check "recreate the target; the source resumes" retarget
wait
settled() { sm_quiesce $S 120 && sm_equal "$src" "$dst"; }
sm_check "after target restart: quiesce and equal" settled

# Remove a source whose target is gone, with records still in its ring.
dmsetup remove $D
dd if=/dev/urandom of=/dev/mapper/$S bs=1M count=4 oflag=direct conv=fsync status=none
sm_check "remove a source with the target unreachable (bounded time)" timeout 30 dmsetup remove $S

# Authentication.
sm_check "same secret on both sides: connected" pair "2 secret s3cr3t-A" "2 secret s3cr3t-A" connected
dmsetup remove $S; dmsetup remove $D
sm_check "different secrets: source refused:auth" pair "2 secret s3cr3t-A" "2 secret wrong-B" refused:auth
dmsetup remove $S; dmsetup remove $D
sm_check "secret on the target only: source refused:auth" pair "2 secret s3cr3t-A" "" refused:auth
dmsetup remove $S; dmsetup remove $D
sm_check "rmmod after the last device" rmmod dm_specmirror
ktap_finished
