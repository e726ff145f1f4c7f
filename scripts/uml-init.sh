#!/bin/bash
# PID 1 inside User-Mode Linux (see uml.sh). The root is the host's, over
# hostfs, read-only; /tmp and /run are fresh tmpfs; $dmsm_out (from the
# kernel command line: words init does not know become its environment) is
# the host's result directory, mounted read-write at the same path. Runs
# vm-guest.sh as the QEMU VM does, then powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p "$dmsm_out" && mount -t hostfs none "$dmsm_out" -o "$dmsm_out"
mount -t debugfs none /sys/kernel/debug
mkdir -p /dev/mapper /dev/pts /dev/shm /run/netns
# bash's <(...) needs /dev/fd.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ip link set lo up
# The repository and the cache may live under /tmp on the host: the guest's
# /tmp is its own, so mount them back where they were.
for d in $dmsm_binds; do
	mkdir -p "$d" && mount -t hostfs none "$d" -o "$d,ro"
done
cd "$dmsm_cwd" 2>/dev/null || cd /
bash "$dmsm_repo/scripts/vm-guest.sh" "$dmsm_out"
sync
echo o >/proc/sysrq-trigger
sleep 10
