#!/usr/bin/env bash
# Build the test (debug) or benchmark (release) kernel from Debian's
# linux-source-6.12 into the cache, keyed by version, config fragments and
# toolchain. An unchanged second call only checks and prints the directory.
#
#   scripts/build-kernel.sh [debug|release|uml]    -> prints the build directory
#   scripts/build-kernel.sh --config-only [debug|release|uml]
#
# debug and release are x86_64 kernels for the QEMU VM (scripts/vm.sh); uml
# is a User-Mode Linux kernel with debug's checkers, the fast functional
# tier (scripts/uml.sh): its binary is <dir>/linux.
#        configure and check the options only (seconds), no build
set -euo pipefail
. "$(dirname "$0")/lib.sh"

config_only=
if [ "${1:-}" = --config-only ]; then config_only=1; shift; fi
kind=${1:-debug}
case "$kind" in debug|release|uml) ;; *) echo "usage: $0 [--config-only] [debug|release|uml]" >&2; exit 2;; esac

out=$(dmsm_kdir "$kind")
image=arch/x86/boot/bzImage
[ "$kind" != uml ] || image=linux
built() { [ -z "$config_only" ] && [ -f "$out/.dmsm-built" ] && [ -f "$out/$image" ]; }
if built; then echo "$out"; exit 0; fi

# One build at a time in a cache (make check builds the UML and the debug
# kernel from two lanes; both share the extracted source tree). Whoever
# waited may find its kernel built meanwhile.
mkdir -p "$DMSM_CACHE"
exec 8>"$DMSM_CACHE/build-kernel.lock"
flock 8
if built; then echo "$out"; exit 0; fi

src="$DMSM_CACHE/src/linux-source-6.12"
if [ ! -f "$src/.dmsm-extracted" ]; then
	echo "build-kernel: extracting $DMSM_KSRC_TAR" >&2
	rm -rf "$src"
	mkdir -p "$DMSM_CACHE/src"
	tar -C "$DMSM_CACHE/src" -xf "$DMSM_KSRC_TAR"
	touch "$src/.dmsm-extracted"
fi

[ -z "$config_only" ] || out=$(mktemp -d "$DMSM_CACHE/config-check.XXXXXX")
mkdir -p "$out"
arch=()
[ "$kind" != uml ] || arch=(ARCH=um)
mk() { make -C "$src" O="$out" "${arch[@]}" LLVM="$DMSM_LLVM" -j"$(nproc)" "$@"; }
start=$(date +%s)
echo "build-kernel: configuring $kind kernel in $out" >&2
mk defconfig >/dev/null
frags=()
while IFS= read -r f; do frags+=("$f"); done < <(dmsm_kconfig_frags "$kind")
{
	# virtme-ng's own needs (virtio, 9p, ...) first, ours last so they win.
	[ "$kind" = uml ] || virtme-configkernel --defconfig --dry-run
	dmsm_kconfig "$kind"
} >>"$out/.config"
# olddefconfig warns about every option we override on purpose: keep
# its chatter in a log.
mk olddefconfig >"$out/config.log" 2>&1 || { cat "$out/config.log" >&2; exit 1; }

# Every option we asked for must have survived olddefconfig, or the tests
# would run on a kernel that silently lacks what they rely on.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*)
		grep -qxF "$line" "$out/.config" || { echo "build-kernel: wanted $line, got: $(grep "^${line%%=*}=" "$out/.config" || echo unset)" >&2; bad=1; }
		;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }; opt=${opt%% *}
		if grep -q "^$opt=" "$out/.config"; then echo "build-kernel: wanted $opt off, got: $(grep "^$opt=" "$out/.config")" >&2; bad=1; fi
		;;
	esac
done < <(dmsm_kconfig "$kind")
[ $bad -eq 0 ] || { echo "build-kernel: config check failed" >&2; exit 1; }
if [ -n "$config_only" ]; then
	echo "build-kernel: $kind config: every requested option survived olddefconfig" >&2
	rm -rf "$out"
	exit 0
fi

echo "build-kernel: building (this takes ~10-15 minutes on 2 cores)" >&2
mk >"$out/build.log" 2>&1 || { tail -40 "$out/build.log" >&2; exit 1; }
touch "$out/.dmsm-built"
echo "build-kernel: $kind kernel built in $(( $(date +%s) - start ))s" >&2
echo "$out"
