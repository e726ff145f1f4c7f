#!/usr/bin/env bash
# Builds dm-specmirror.ko against the cached kernel of KIND in a copy of the
# source tree under the cache (so the debug module in the repository stays
# as it is) and prints the module's path.
#
#   scripts/build-module.sh release|debug|uml [clippy]
#
# With "clippy" the Rust code goes through clippy (CLIPPY=1), in a copy of
# its own: make check runs it beside the VM that loads the repository's
# module.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kind=${1:?usage: $0 debug|release|uml [clippy]}
clippy=()
[ "${2:-}" != clippy ] || clippy=(CLIPPY=1)
kdir=$("$DMSM_REPO/scripts/build-kernel.sh" "$kind")
dst="$DMSM_CACHE/module-$kind${2:+-$2}-$(printf '%s' "$DMSM_REPO" | sha256sum | cut -c1-8)"
# A copy of the tracked (and new, not ignored) files, one per kind, so
# nothing built against another kernel (objects, generated bindings) leaks
# in. rsync keeps the files' times, so an unchanged tree rebuilds nothing.
# A file listed but gone before rsync reads it (a temporary file of a build
# running in the repository at the same time, as in make check's lanes) is
# skipped, not an error.
mkdir -p "$dst"
git -C "$DMSM_REPO" ls-files -co --exclude-standard -z |
	grep -zv '^fuzz/\|^crates/' |
	rsync -a --ignore-missing-args --from0 --files-from=- "$DMSM_REPO/" "$dst/"
arch=()
[ "$kind" != uml ] || arch=(ARCH=um)
make -s -C "$kdir" M="$dst" "${arch[@]}" "${clippy[@]}" LLVM="$DMSM_LLVM" modules >&2
echo "$dst/dm-specmirror.ko"
