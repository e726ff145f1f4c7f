#!/usr/bin/env bash
# Run a command in a VM on the cached kernel (virtme-ng, TCG: KVM does not
# work on this machine kind). Shows the guest's output, returns the
# command's exit status, and fails if the guest's dmesg holds a splat.
#
#   scripts/vm.sh [--release] CMD [ARGS...]
#
# The guest sees the host's root read-only (the repo, the cache), with
# /tmp writable; results come back through a shared --rwdir.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kind=debug
if [ "${1:-}" = --release ]; then kind=release; shift; fi
[ $# -gt 0 ] || { echo "usage: $0 [--release] CMD [ARGS...]" >&2; exit 2; }
kdir=${KDIR:-$("$DMSM_REPO/scripts/build-kernel.sh" "$kind")}

out=$(mktemp -d /tmp/dmsm-vm.XXXXXX)
trap 'rm -rf "$out"' EXIT
dmsm_guest_prepare "$out" "$@"
mem=${DMSM_VM_MEMORY:-4G}
cpus=${DMSM_VM_CPUS:-2}
# DMSM_VM_RWDIR: one more host directory the guest may write (same path).
extra=()
[ -z "${DMSM_VM_RWDIR:-}" ] || extra=(--rwdir "$DMSM_VM_RWDIR")

# virtme-ng-init starts udevd when the host has one, and its coldplug costs
# minutes under TCG. The tests make their own nodes (DM_DISABLE_UDEV=1);
# scripts/deps.sh does not install udev, and nothing here needs it.
if [ -x /usr/lib/systemd/systemd-udevd ] || [ -x /lib/systemd/systemd-udevd ]; then
	echo "vm: note: the host has udev, so the guest starts it: boot takes minutes longer" >&2
fi

start=$(date +%s)
# -v: without it the guest's output is lost. The console carries kernel
# messages too; the guest script brackets the command's own output.
# A guest whose command never began (QEMU itself died while the kernel
# booted: seen once, an assertion in QEMU's MSI-X emulation under TCG
# during PCI probing, 2026-12-07) is booted once more; anything after the
# command began counts as it is.
for attempt in 1 2; do
	set +e
	timeout --foreground "${DMSM_VM_TIMEOUT:-3600}" \
		vng --run "$kdir" --disable-kvm --force-9p --cpus "$cpus" --memory "$mem" -v \
			--rwdir "$out" "${extra[@]}" --cwd "$DMSM_REPO" \
			--append "kmemleak=on" \
			--exec "$DMSM_REPO/scripts/vm-guest.sh $out" </dev/null 2>&1 |
		dmsm_guest_output "$out"
	set -e
	if [ "$attempt" = 2 ] || [ -f "$out/rc" ] || grep -q '^@@@ guest: begin' "$out/console"; then
		break
	fi
	echo "vm: the guest died before its command began; last console lines:" >&2
	tail -5 "$out/console" >&2
	echo "vm: booting it once more" >&2
done
dmsm_guest_verdict "$out" vm "$start"
