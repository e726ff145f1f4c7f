# Shared settings for the scripts: where the kernel cache lives and how a
# build is keyed. Sourced, not run.

# Everything that takes minutes to make lives outside the repository, so a
# fresh clone (and CI) on the same machine reuses it.
DMSM_CACHE=${DMSM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm-specmirror}
DMSM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DMSM_LLVM=${DMSM_LLVM:--19}
DMSM_KSRC_TAR=/usr/src/linux-source-6.12.tar.xz
# virtme-ng lives in a venv of its own in the cache (Debian's python
# refuses system-wide pip installs); cargo's tools under ~/.cargo/bin.
DMSM_VENV="$DMSM_CACHE/venv"
export PATH="$DMSM_VENV/bin:$HOME/.cargo/bin:$PATH"
# bindgen (ours and the kernel's) must find libclang 19, not another one.
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}

# The kconfig fragments of a kernel kind, in order (later ones win).
dmsm_kconfig_frags() { # kind
	local k=$DMSM_REPO/scripts/kconfig
	case "$1" in
	uml) printf '%s\n' "$k/common.config" "$k/debug.config" "$k/uml.config" ;;
	*) printf '%s\n' "$k/common.config" "$k/$1.config" ;;
	esac
}

# The options a kind asks for. For UML, two of common.config's lines go:
# CONFIG_WERROR, because UML's asm-generic/io.h gives clang
# -Wnull-pointer-arithmetic warnings in the kernel's own code (the module
# keeps warnings as errors: Kbuild), and the x86 assembler CRC32C, which
# UML does not build (the generic crc32c serves).
dmsm_kconfig() { # kind
	local f
	while IFS= read -r f; do
		if [ "$1" = uml ]; then
			grep -v -e '^CONFIG_WERROR=' -e '^CONFIG_CRYPTO_CRC32C_INTEL=' "$f"
		else
			cat "$f"
		fi
	done < <(dmsm_kconfig_frags "$1")
}

# The key of a build: kernel source, the fragments, the toolchain. Any change
# of these gives a new directory; an unchanged key reuses the old build.
dmsm_build_key() { # kind
	local kind=$1
	{
		sha256sum "$DMSM_KSRC_TAR" 2>/dev/null | cut -d' ' -f1
		dmsm_kconfig "$kind"
		rustc --version; bindgen --version; "clang$DMSM_LLVM" --version | head -1
		[ "$kind" = uml ] || virtme-configkernel --defconfig --dry-run 2>/dev/null
	} | sha256sum | cut -c1-12
}

dmsm_kdir() { # kind -> build directory of that kind (may not exist yet)
	local kind=$1 ver
	ver=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || echo unknown)
	echo "$DMSM_CACHE/build/$kind-$ver-$(dmsm_build_key "$kind")"
}

# dmsm_ksft_dir KDIR: where install-selftests.sh installs this clone's
# selftests for kernel KDIR (one directory per clone and kernel, so that
# make check's UML and SMP lanes never replace each other's tests).
dmsm_ksft_dir() {
	echo "$DMSM_CACHE/kselftest-$(printf '%s:%s' "$DMSM_REPO" "$(basename "$1")" | sha256sum | cut -c1-8)"
}

# After a guest run (vm.sh, uml.sh): fails if the kernel log in $out/dmesg
# holds a splat from the command on, even if the command passed, and exits
# with the verdict. Early-boot reports (seen under TCG, and UML's lockdep
# "bad unlock balance" from cgroup_init_early, before any of our code
# runs) are shown but do not fail the run. DMSM_VM_DMESG: keep a copy.
dmsm_dmesg_verdict() { # out who rc
	local out=$1 who=$2 rc=$3 splat
	splat='WARNING:|BUG:|Oops|KASAN|kernel BUG|circular locking|lock held when returning|suspicious RCU|sleeping function called from invalid context|general protection fault|Kernel panic|UBSAN|INFO: task .* blocked|unreferenced object|rcu_sched self-detected stall|soft lockup'
	if grep -q 'dmsm-vm: command starts' "$out/dmesg"; then
		sed -n '1,/dmsm-vm: command starts/p' "$out/dmesg" >"$out/dmesg.boot"
		sed -n '/dmsm-vm: command starts/,$p' "$out/dmesg" >"$out/dmesg.cmd"
	else
		: >"$out/dmesg.boot"; cp "$out/dmesg" "$out/dmesg.cmd"
	fi
	if grep -Eq "$splat" "$out/dmesg.boot"; then
		echo "$who: note: the kernel reported a problem while booting, before the command ran:" >&2
		grep -E -m3 "$splat" "$out/dmesg.boot" >&2
	fi
	if grep -Eq "$splat" "$out/dmesg.cmd"; then
		echo "$who: kernel splat in the guest's dmesg:" >&2
		grep -E -B2 -A30 "$splat" "$out/dmesg.cmd" >"$out/splat"
		head -120 "$out/splat" >&2
		[ "$rc" -ne 0 ] || rc=1
	fi
	[ -z "${DMSM_VM_DMESG:-}" ] || cp "$out/dmesg" "$DMSM_VM_DMESG"
	exit "$rc"
}

# dmsm_guest_prepare OUT CMD...: the command and the DMSM_* knobs (the
# guest does not inherit our environment) into OUT, for vm-guest.sh.
dmsm_guest_prepare() {
	local out=$1 v; shift
	printf '%q ' "$@" >"$out/cmd"
	for v in $(compgen -v DMSM_ || true); do printf 'export %s=%q\n' "$v" "${!v}"; done >"$out/env"
}

# dmsm_guest_output OUT: the guest's console on stdin, kept in OUT/console;
# prints only the command's own output (vm-guest.sh brackets it).
dmsm_guest_output() {
	tee "$1/console" | sed -n '/^@@@ guest: begin/,/^@@@ guest: end/p' | grep -v '^@@@ guest:'
}

# dmsm_guest_verdict OUT WHO START: after the guest ended: its time, then
# the command's exit status, or failure if the guest never wrote one, and
# the splat check (dmsm_dmesg_verdict). Exits.
dmsm_guest_verdict() {
	local out=$1 who=$2 start=$3
	echo "$who: guest ran $(( $(date +%s) - start ))s" >&2
	if [ ! -f "$out/rc" ]; then
		echo "$who: the guest did not finish (no exit status); last console lines:" >&2
		tail -30 "$out/console" >&2
		exit 1
	fi
	dmsm_dmesg_verdict "$out" "$who" "$(cat "$out/rc")"
}
