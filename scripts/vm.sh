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
mem=${DMSM_VM_MEMORY:-4G}
cpus=${DMSM_VM_CPUS:-2}

start=$(date +%s)
# -v: without it the guest's output is lost. The console carries kernel
# messages too; the guest script brackets the command's own output.
set +e
timeout --foreground "${DMSM_VM_TIMEOUT:-3600}" \
	vng --run "$kdir" --disable-kvm --cpus "$cpus" --memory "$mem" -v \
		--rwdir "$out" --cwd "$DMSM_REPO" \
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
if grep -Eq "$splat" "$out/dmesg" 2>/dev/null; then
	echo "vm: kernel splat in the guest's dmesg:" >&2
	grep -E -B2 -A30 "$splat" "$out/dmesg" | head -120 >&2
	[ "$rc" -ne 0 ] || rc=1
fi
[ -z "${DMSM_VM_DMESG:-}" ] || cp "$out/dmesg" "$DMSM_VM_DMESG"
exit "$rc"
