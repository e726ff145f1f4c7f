#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Suspend and remove end whatever the link does. With `completion sync`
# and a small ring, writes wait for the target: for its acknowledgement,
# or for ring room. The link then goes down (veth down, nothing reset),
# and:
# - a noflush suspend ends within the grace (10 s) plus a margin; the
#   writes it could not wait for go back to dm, the device resumes, the
#   link comes back, everything replicates and the devices are equal;
# - a suspend with the link still down ends within the same bound (the
#   writes still waiting for ring room fail), and so does a forced remove
#   while a writer still holds the device open.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
command -v ip >/dev/null || { ktap_skip_all "iproute2 not found"; exit "$KSFT_SKIP"; }
BOUND=${DMSM_SUSPEND_BOUND:-30}
cleanup() { sm_cleanup; sm_netns_down; }
trap cleanup EXIT
ktap_print_header
ktap_set_plan 11
sm_load
sm_netns_down
sm_check "two hosts joined by veth" sm_netns_up
src=$(sm_loop 64); dst=$(sm_loop 64)
n=$(sm_sectors "$src")
s=$PREFIX-src d=$PREFIX-dst

link() { ip -n $SM_NS_SRC link set smt-veth-s "$1" && ip -n $SM_NS_DST link set smt-veth-d "$1"; }

# timed DESCRIPTION CMD...: CMD must end within BOUND seconds.
timed() {
	local desc=$1 t0=$EPOCHSECONDS; shift
	if timeout $((BOUND * 3)) "$@" >/tmp/smt-timed.out 2>&1 && [ $((EPOCHSECONDS - t0)) -le "$BOUND" ]; then
		echo "# $desc: $((EPOCHSECONDS - t0)) s"
		ktap_test_pass "$desc"
	else
		sed 's/^/# /' /tmp/smt-timed.out
		echo "# $desc: $((EPOCHSECONDS - t0)) s (bound $BOUND s)"
		ktap_test_fail "$desc"
	fi
}

# `on_disconnect block`: this is about writes that wait for the link
# until the suspend's grace ends them; in degraded mode (the default) the
# source would let them complete after degrade_after (5 s by default) instead, before
# the grace ran out.
sm_check "create target and source (completion sync, ring_mb 4, on_disconnect block)" bash -c "
	ip netns exec $SM_NS_DST dmsetup create $d --table '0 $n specmirror target $dst $(sm_meta $dst) $SM_IP_DST:7800' &&
	ip netns exec $SM_NS_SRC dmsetup create $s --table '0 $n specmirror source $src $(sm_meta $src) $SM_IP_DST:7800 6 completion sync ring_mb 4 on_disconnect block'"
sm_check "connected" sm_state $s connected 60
sm_load_start /dev/mapper/$s --size=48M
sm_nap 3
sm_check "link down under load" link down
sm_nap 2
echo "# before suspend: $(dmsetup status $s)"
timed "noflush suspend ends with the link down" dmsetup suspend --noflush $s
echo "# suspended: $(dmsetup status $s)"
sm_check "resume, link up" bash -c "dmsetup resume $s && ip -n $SM_NS_SRC link set smt-veth-s up && ip -n $SM_NS_DST link set smt-veth-d up"
sm_nap 3
sm_check_load "fio saw no error"
sm_check "quiesce (ring empty)" sm_quiesce $s 120
sm_check "data devices equal (cmp)" sm_equal "$src" "$dst"
echo "# source: $(dmsetup status $s)"
# Remove with writes waiting and the link down: no cmp after it (what the
# removed source had not replicated is known only from version 0.3 on).
sm_load_start /dev/mapper/$s --size=48M --continue_on_error=all
sm_nap 3
link down
sm_nap 2
timed "suspend ends with the link down" dmsetup suspend $s
# fio still holds the device open, its next writes held by dm while the
# device is suspended, so a plain remove fails with EBUSY (dm refuses to
# remove an open device). The operator's way out is what is timed here:
# `remove --force` loads a table that fails all I/O, which destroys the
# source with the link still down, fio's held writes fail, fio closes the
# device and the remove completes.
kill -TERM "$SM_LOAD_PID" 2>/dev/null
timed "remove --force ends with the link down" dmsetup remove --force --retry $s
wait "$SM_LOAD_PID" 2>/dev/null; SM_LOAD_PID=
ktap_finished
