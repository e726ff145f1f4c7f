#!/usr/bin/env bash
# Runs in the VM: the installed kselftest suite (see install-selftests.sh),
# one test at a time through kselftest's runner (its timeout, its KTAP),
# with each test's time; exits non-zero if any test reported "not ok"
# (run_kselftest.sh itself exits 0 whatever its tests did).
set -u
. "$(dirname "$0")/lib.sh"
export DMSM_MODULE=${DMSM_MODULE:-$DMSM_REPO/dm-specmirror.ko}
cd "${DMSM_KSFT_DIR:?set by make: the directory install-selftests.sh printed}" || exit 1
# DMSM_RUN_ONE=script.sh: that script alone, outside kselftest's runner
# and its timeout (the soak).
if [ -n "${DMSM_RUN_ONE:-}" ]; then
	cd dm-specmirror && exec "./$DMSM_RUN_ONE"
fi
tests=${DMSM_TESTS:-$(sed -n 's/^dm-specmirror://p' kselftest-list.txt)}
out=$(mktemp /tmp/dmsm-ksft.XXXXXX)
rc=0 times=()
for t in $tests; do
	t0=$EPOCHSECONDS
	./run_kselftest.sh -t "dm-specmirror:$t" 2>&1 | tee "$out"
	grep -q '^ok [0-9]* selftests: ' "$out" || rc=1
	grep -q '^not ok ' "$out" && rc=1
	times+=("$(printf '%5ss  %s' $((EPOCHSECONDS - t0)) "$t")")
done
rm -f "$out"
echo "# selftest times:"
printf '# %s\n' "${times[@]}"
exit "$rc"
