#!/usr/bin/env bash
# Run a command under User-Mode Linux on the cached UML kernel: the fast
# functional tier (boot in about a second, processes start 3-7x faster than
# under TCG). Same contract as vm.sh: shows the command's output, returns
# its exit status, fails if the guest's dmesg holds a splat.
#
#   scripts/uml.sh CMD [ARGS...]
#
# UML in 6.12 has one CPU, no preemption and HZ=100: it cannot find races
# that need two CPUs and its timings mean nothing. Those stay in vm.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
kdir=${DMSM_UML_KDIR:-$("$DMSM_REPO/scripts/build-kernel.sh" uml)}

out=$(mktemp -d /tmp/dmsm-uml.XXXXXX)
trap 'rm -rf "$out"' EXIT
dmsm_guest_prepare "$out" "$@"
# The guest's /tmp and /run are its own tmpfs: host directories it needs
# from there (a clone under /tmp, the cache) are mounted back.
binds=
for d in "$DMSM_REPO" "$DMSM_CACHE" $(cd "$PWD" && pwd); do
	case "$d" in /tmp/*|/run/*) binds+=" $d" ;; esac
done

start=$(date +%s)
set +e
# UML's console is our stdout; the guest script brackets the command's
# own output, as in vm.sh. Kernel messages go to the log buffer only.
timeout --foreground "${DMSM_VM_TIMEOUT:-3600}" \
	"$kdir/linux" mem="${DMSM_UML_MEMORY:-3G}" \
		root=/dev/root rootfstype=hostfs rootflags=/ ro \
		init="$DMSM_REPO/scripts/uml-init.sh" \
		dmsm_out="$out" dmsm_repo="$DMSM_REPO" dmsm_cwd="$PWD" dmsm_binds="${binds# }" \
		con=null con0=null,fd:1 ssl=null log_buf_len=8M loglevel=4 kmemleak=on \
		</dev/null 2>&1 |
	dmsm_guest_output "$out"
set -e
dmsm_guest_verdict "$out" uml "$start"
