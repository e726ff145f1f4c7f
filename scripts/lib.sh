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

# The key of a build: kernel source, the fragments, the toolchain. Any change
# of these gives a new directory; an unchanged key reuses the old build.
dmsm_build_key() { # kind
	local kind=$1
	{
		sha256sum "$DMSM_KSRC_TAR" 2>/dev/null | cut -d' ' -f1
		cat "$DMSM_REPO/scripts/kconfig/common.config" "$DMSM_REPO/scripts/kconfig/$kind.config"
		rustc --version; bindgen --version; "clang$DMSM_LLVM" --version | head -1
		virtme-configkernel --defconfig --dry-run 2>/dev/null
	} | sha256sum | cut -c1-12
}

dmsm_kdir() { # kind -> build directory of that kind (may not exist yet)
	local kind=$1 ver
	ver=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || echo unknown)
	echo "$DMSM_CACHE/build/$kind-$ver-$(dmsm_build_key "$kind")"
}

# Where this checkout's kselftest install goes: one per checkout, so a CI
# clone and a working tree on the same machine do not overwrite each other.
dmsm_ksft_dir() {
	echo "$DMSM_CACHE/kselftest-$(printf '%s' "$DMSM_REPO" | sha256sum | cut -c1-8)"
}
