#!/usr/bin/env bash
# Install selftests/ into the kernel tree's tools/testing/selftests layout
# as target "dm-specmirror", then kselftest-install it (run_kselftest.sh and
# the ktap helpers) into the cache, where the VM runs it from.
#
#   scripts/install-selftests.sh KDIR   -> prints the install directory
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kdir=${1:?usage: $0 KDIR}
ksrc=$(readlink -f "$kdir/source" 2>/dev/null || echo "$kdir")
dst="$ksrc/tools/testing/selftests/dm-specmirror"
inst=$(dmsm_ksft_dir "$kdir")
mkdir -p "$dst" "$DMSM_CACHE"
# The kernel tree is shared by every clone using this cache: one install
# at a time, or two clones would mix their tests.
exec 9>"$DMSM_CACHE/install-selftests.lock"
flock 9
rsync -a --delete "$DMSM_REPO/selftests/" "$dst/"
rm -rf "$inst"
make -s -C "$ksrc/tools/testing/selftests" TARGETS=dm-specmirror \
	KSFT_INSTALL_PATH="$inst" install >/dev/null
exec 9>&-
echo "$inst"
