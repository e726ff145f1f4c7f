#!/usr/bin/env bash
# Runs in the VM (make demo): two "hosts" as network namespaces joined by
# veth, a target in one and a source in the other, data written through
# the source, then both status lines and whether the data devices match.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export DM_DISABLE_UDEV=1
A=smdemo-src B=smdemo-dst
cleanup() {
	dmsetup remove --retry $A 2>/dev/null || true
	dmsetup remove --retry $B 2>/dev/null || true
	ip netns del $A 2>/dev/null || true
	ip netns del $B 2>/dev/null || true
	local d
	for d in "${la:-}" "${lb:-}" "${ma:-}" "${mb:-}"; do [ -z "$d" ] || losetup -d "$d"; done
	rm -f /tmp/smdemo-*.img
}
trap cleanup EXIT

grep -q '^dm_specmirror ' /proc/modules || insmod "${DMSM_MODULE:-$DMSM_REPO/dm-specmirror.ko}"
truncate -s 64M /tmp/smdemo-a.img /tmp/smdemo-b.img
la=$(losetup -f --show /tmp/smdemo-a.img); lb=$(losetup -f --show /tmp/smdemo-b.img)
# Each side's metadata device: zeroed, so the first load formats it.
truncate -s 4M /tmp/smdemo-ma.img /tmp/smdemo-mb.img
ma=$(losetup -f --show /tmp/smdemo-ma.img); mb=$(losetup -f --show /tmp/smdemo-mb.img)
n=$(blockdev --getsz "$la")

ip netns add $A; ip netns add $B
ip link add veth-a netns $A type veth peer name veth-b netns $B
ip -n $A addr add 10.77.0.1/24 dev veth-a; ip -n $A link set veth-a up; ip -n $A link set lo up
ip -n $B addr add 10.77.0.2/24 dev veth-b; ip -n $B link set veth-b up; ip -n $B link set lo up
echo "demo: hosts $A (10.77.0.1) and $B (10.77.0.2) joined by veth"

# Each table is loaded from inside its host's namespace: the socket lives there.
ip netns exec $B dmsetup create $B --table "0 $n specmirror target $lb $mb 10.77.0.2:7789"
ip netns exec $A dmsetup create $A --table "0 $n specmirror source $la $ma 10.77.0.2:7789"
echo "demo: target: $(dmsetup table $B)"
echo "demo: source: $(dmsetup table $A)"

echo "demo: writing 32 MiB of random data through the source"
dd if=/dev/urandom of=/dev/mapper/$A bs=1M count=32 oflag=direct conv=fsync status=none

# Quiesce: the initial sync of the new target has ended (dirty=0) and the
# source's ring is empty once the target applied everything.
for _ in $(seq 1 600); do
	dmsetup status $A | grep ' ring=0/' | grep -q ' dirty=0 ' && break
	sleep 0.1
done
echo "demo: status source: $(dmsetup status $A)"
echo "demo: status target: $(dmsetup status $B)"
if cmp -s "$la" "$lb"; then
	echo "demo: data devices: EQUAL"
else
	echo "demo: data devices: DIFFER (first difference: $(cmp "$la" "$lb" 2>&1 | head -1))"
	exit 1
fi
