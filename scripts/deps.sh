#!/usr/bin/env bash
# Install everything dm-specmirror needs on a Debian 12 machine.
# Idempotent: each step checks first, so a second run takes a few seconds.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

APT_PKGS=(
	linux-source-6.12 clang-19 lld-19 llvm-19 libclang-19-dev
	qemu-system-x86 flex bison bc cpio libelf-dev libssl-dev kmod
	dmsetup fio iproute2 busybox-static e2fsprogs drbd-utils
	nbd-server nbd-client make rsync python3-venv python3-pip xz-utils
	python3-matplotlib
	procps linux-perf
)
BINDGEN_VERSION=0.69.5
VNG_VERSION=1.42

log() { printf 'deps: %s\n' "$*" >&2; }

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: must run as root (apt-get, modprobe, VM tooling)" >&2
		exit 1
	fi
}

install_apt() {
	local missing=()
	for p in "${APT_PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "apt: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# drbd-utils and nbd-server ship services; do not start them on install.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	rm -f /usr/sbin/policy-rc.d
}

install_rust() {
	if ! command -v cargo >/dev/null; then
		echo "deps: cargo/rustup not found; this machine kind ships rustup" >&2
		exit 1
	fi
	rustup component list --installed 2>/dev/null | grep -q '^rust-src' ||
		{ log "rustup: adding rust-src"; rustup component add rust-src >/dev/null; }
	rustup component list --installed 2>/dev/null | grep -q '^clippy' ||
		rustup component add clippy >/dev/null
	# The fuzz targets need nightly (cargo-fuzz uses -Zsanitizer); this
	# machine kind ships it, and it cannot be fetched from here.
	if ! rustup toolchain list | grep -q '^nightly'; then
		echo "deps: the nightly Rust toolchain is missing (needed by cargo fuzz)" >&2
		exit 1
	fi
	if ! cargo fuzz --version >/dev/null 2>&1; then
		log "cargo: installing cargo-fuzz"
		cargo install -q cargo-fuzz --locked
	fi
	if ! bindgen --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
		log "cargo: installing bindgen-cli $BINDGEN_VERSION"
		cargo install -q bindgen-cli --version "$BINDGEN_VERSION" --locked
	fi
}

install_vng() {
	if "$DMSM_VENV/bin/vng" --version 2>/dev/null | grep -q "$VNG_VERSION"; then return 0; fi
	log "pip: installing virtme-ng $VNG_VERSION into $DMSM_VENV"
	rm -rf "$DMSM_VENV"
	python3 -m venv "$DMSM_VENV"
	"$DMSM_VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION"
}

need_root
install_apt
install_rust
install_vng
# bindgen needs libclang; the kernel build finds it through LIBCLANG_PATH.
[ -e /usr/lib/llvm-19/lib/libclang.so ] || { echo "deps: libclang-19 missing" >&2; exit 1; }
log "all dependencies present"
