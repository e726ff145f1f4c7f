#!/usr/bin/env bash
# Runs in the VM: the installed kselftest suite (see install-selftests.sh).
set -u
. "$(dirname "$0")/lib.sh"
export DMSM_MODULE=${DMSM_MODULE:-$DMSM_REPO/dm-specmirror.ko}
cd "$(dmsm_ksft_dir)" || exit 1
# DMSM_RUN_ONE=script.sh: that script alone, outside kselftest's runner
# and its timeout (the soak).
if [ -n "${DMSM_RUN_ONE:-}" ]; then
	cd dm-specmirror && exec "./$DMSM_RUN_ONE"
fi
./run_kselftest.sh ${DMSM_TESTS:+$(for t in $DMSM_TESTS; do printf -- '-t dm-specmirror:%s ' "$t"; done)}
