#!/usr/bin/env bash
# Runs inside the VM (see vm.sh): the command from $1/cmd, then its exit
# status and the kernel log into the shared directory $1.
out=$1
export DM_DISABLE_UDEV=1
. "$out/env"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
mkdir -p /dev/mapper
# Forget what boot allocated, so a later scan reports only the command's leaks.
# No automatic scans: one reads all of memory (13 s of a vCPU under TCG when
# idle, far longer under load) and slowed whole tests by a third when it
# came during them. The explicit scans (below, and in tests that check for
# leaks) still report.
if [ -w /sys/kernel/debug/kmemleak ]; then
	echo clear >/sys/kernel/debug/kmemleak 2>/dev/null
	echo scan=off >/sys/kernel/debug/kmemleak 2>/dev/null
fi
# Splats before this line come from booting under TCG, not from the command.
echo "dmsm-vm: command starts" >/dev/kmsg
echo "@@@ guest: begin"
bash -c "$(cat "$out/cmd")" 2>&1
rc=$?
echo "@@@ guest: end"
# Catch leaks of what the command left behind; kmemleak reports them to
# dmesg-visible "unreferenced object" lines, which vm.sh treats as a splat.
if [ -w /sys/kernel/debug/kmemleak ]; then
	# kmemleak only reports objects older than 5 s.
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak 2>/dev/null
	cat /sys/kernel/debug/kmemleak >"$out/kmemleak" 2>/dev/null
fi
dmesg >"$out/dmesg"
[ -s "$out/kmemleak" ] && cat "$out/kmemleak" >>"$out/dmesg"
echo "$rc" >"$out/rc"
sync
