#!/usr/bin/env bash
# Runs inside the VM (see vm.sh): the command from $1/cmd, then its exit
# status and the kernel log into the shared directory $1.
out=$1
# leaks_since START: of kmemleak's report on stdin, the objects allocated at
# or after jiffies START.
leaks_since() {
	awk -v start="$1" '
		/^unreferenced object/ { if (keep) printf "%s", block; block = ""; keep = 0 }
		/^  comm .*jiffies/ { keep = ($NF + 0 >= start + 0) }
		{ block = block $0 "\n" }
		END { if (keep) printf "%s", block }'
}
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
# Leaks count only for objects allocated from here on (see below).
start_jiffies=$(awk '/^jiffies:/ {print $2; exit}' /proc/timer_list 2>/dev/null)
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
	# Only objects allocated since the command started: after long runs
	# (make faults, 9 minutes) UML's kmemleak reported 17,218 objects that
	# booting had allocated (initcalls' mempools, rtnl, the console), every
	# one before the command started; "clear" above cannot hide them, since
	# they were still referenced then. Each report names its allocation
	# time in jiffies.
	leaks_since "${start_jiffies:-0}" </sys/kernel/debug/kmemleak >"$out/kmemleak" 2>/dev/null
fi
dmesg >"$out/dmesg"
[ -s "$out/kmemleak" ] && cat "$out/kmemleak" >>"$out/dmesg"
echo "$rc" >"$out/rc"
sync
