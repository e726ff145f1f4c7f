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
printf '%q ' "$@" >"$out/cmd"
# The guest does not inherit our environment: forward the DMSM_* knobs.
{ for v in $(compgen -v DMSM_ || true); do printf 'export %s=%q\n' "$v" "${!v}"; done; } >"$out/env"
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
set +e
timeout --foreground "${DMSM_VM_TIMEOUT:-3600}" \
	vng --run "$kdir" --disable-kvm --force-9p --cpus "$cpus" --memory "$mem" -v \
		--rwdir "$out" "${extra[@]}" --cwd "$DMSM_REPO" \
		--append "kmemleak=on" \
		--exec "$DMSM_REPO/scripts/vm-guest.sh $out" </dev/null 2>&1 |
	tee "$out/console" |
	sed -n '/^@@@ guest: begin/,/^@@@ guest: end/p' | grep -v '^@@@ guest:'
set -e
echo "vm: guest ran $(( $(date +%s) - start ))s" >&2

if [ ! -f "$out/rc" ]; then
	echo "vm: the guest did not finish (no exit status); last console lines:" >&2
	tail -30 "$out/console" >&2
	exit 1
fi
rc=$(cat "$out/rc")

# A splat anywhere in dmesg fails the run, even if the command passed.
splat='WARNING:|BUG:|Oops|KASAN|kernel BUG|circular locking|lock held when returning|suspicious RCU|sleeping function called from invalid context|general protection fault|Kernel panic|UBSAN|INFO: task .* blocked|unreferenced object|rcu_sched self-detected stall|soft lockup'
# Early-boot reports (seen under TCG, before any of our code runs) are shown
# but do not fail the run; everything from the guest's marker on does.
if grep -q 'dmsm-vm: command starts' "$out/dmesg"; then
	sed -n '1,/dmsm-vm: command starts/p' "$out/dmesg" >"$out/dmesg.boot"
	sed -n '/dmsm-vm: command starts/,$p' "$out/dmesg" >"$out/dmesg.cmd"
else
	: >"$out/dmesg.boot"; cp "$out/dmesg" "$out/dmesg.cmd"
fi
if grep -Eq "$splat" "$out/dmesg.boot"; then
	echo "vm: note: the kernel reported a problem while booting, before the command ran:" >&2
	grep -E -m3 "$splat" "$out/dmesg.boot" >&2
fi
if grep -Eq "$splat" "$out/dmesg.cmd"; then
	echo "vm: kernel splat in the guest's dmesg:" >&2
	grep -E -B2 -A30 "$splat" "$out/dmesg.cmd" | head -120 >&2
	[ "$rc" -ne 0 ] || rc=1
fi
[ -z "${DMSM_VM_DMESG:-}" ] || cp "$out/dmesg" "$DMSM_VM_DMESG"
exit "$rc"
