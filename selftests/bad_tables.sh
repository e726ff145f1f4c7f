#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Malformed table lines: each is refused with EINVAL and dm logs the
# precise reason; none leaves a table behind or splats.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
trap sm_cleanup EXIT
sm_load
dev=$(sm_loop 16)
meta=$(sm_meta "$dev")
n=$(sm_sectors "$dev")
long=$(printf 'k%.0s' $(seq 1 70))

# "table after '0 <len> specmirror'|what the kernel log must say"
cases=(
	"|Not enough arguments"
	"source|Not enough arguments"
	"source $dev|Not enough arguments"
	"source $dev 127.0.0.1:7000|Not enough arguments"
	"mirror $dev $meta 127.0.0.1:7000|Invalid role"
	"SOURCE $dev $meta 127.0.0.1:7000|Invalid role"
	"source $dev $meta 127.0.0.1|Invalid address"
	"source $dev $meta 127.0.0:7000|Invalid address"
	"source $dev $meta 300.0.0.1:7000|Invalid address"
	"source $dev $meta 1.2.3.4.5:7000|Invalid address"
	"source $dev $meta localhost:7000|Invalid address"
	"source $dev $meta [fd00::1:7000|Invalid address"
	"source $dev $meta [1::2::3]:7000|Invalid address"
	"source $dev $meta fd00::1:7000|Invalid address"
	"source $dev $meta 127.0.0.1:0|Invalid port"
	"source $dev $meta 127.0.0.1:70000|Invalid port"
	"source $dev $meta 127.0.0.1:-5|Invalid port"
	"source $dev $meta 127.0.0.1:99999999999999999999|Invalid port"
	"source $dev $meta 0.0.0.0:7000|cannot connect to an unspecified address"
	"source $dev $meta [::]:7000|cannot connect to an unspecified address"
	"source $dev $meta 127.0.0.1:7000 x|Invalid optional argument count"
	"source $dev $meta 127.0.0.1:7000 -2 ring_mb 4|Invalid optional argument count"
	"source $dev $meta 127.0.0.1:7000 2 region_size|does not match"
	"source $dev $meta 127.0.0.1:7000 4 ring_mb 4|does not match"
	"source $dev $meta 127.0.0.1:7000 3 ring_mb 4 x|key value pairs"
	"source $dev $meta 127.0.0.1:7000 2 foo 1|Unknown optional argument"
	"source $dev $meta 127.0.0.1:7000 4 ring_mb 4 ring_mb 8|given twice"
	"target $dev $meta 0.0.0.0:7000 2 mode speculative|source role only"
	"target $dev $meta 0.0.0.0:7000 2 completion sync|source role only"
	"target $dev $meta 0.0.0.0:7000 2 hot_regions 8|source role only"
	"target $dev $meta 0.0.0.0:7000 2 sync_rate 100|source role only"
	"target $dev $meta 0.0.0.0:7000 2 degrade_after 5|source role only"
	"target $dev $meta 0.0.0.0:7000 2 on_disconnect block|source role only"
	"source $dev $meta 127.0.0.1:7000 2 region_size 1000|Invalid region_size"
	"source $dev $meta 127.0.0.1:7000 2 region_size 4|Invalid region_size"
	"source $dev $meta 127.0.0.1:7000 2 region_size 4194304|Invalid region_size"
	"source $dev $meta 127.0.0.1:7000 2 region_size 18446744073709551617|Invalid region_size"
	"source $dev $meta 127.0.0.1:7000 2 ring_mb 0|Invalid ring_mb"
	"source $dev $meta 127.0.0.1:7000 2 ring_mb 5000|Invalid ring_mb"
	"source $dev $meta 127.0.0.1:7000 2 mode fast|Invalid mode"
	"source $dev $meta 127.0.0.1:7000 2 completion maybe|Invalid completion"
	"source $dev $meta 127.0.0.1:7000 2 hot_regions 0|Invalid hot_regions"
	"source $dev $meta 127.0.0.1:7000 2 hot_regions -1|Invalid hot_regions"
	"source $dev $meta 127.0.0.1:7000 2 al_regions 0|Invalid al_regions"
	"target $dev $meta 0.0.0.0:7000 2 al_regions 8|source role only"
	"source $dev $meta 127.0.0.1:7000 2 sync_rate 4194305|Invalid sync_rate"
	"source $dev $meta 127.0.0.1:7000 2 degrade_after 0|Invalid degrade_after"
	"source $dev $meta 127.0.0.1:7000 2 degrade_after 3601|Invalid degrade_after"
	"source $dev $meta 127.0.0.1:7000 2 on_disconnect wait|Invalid on_disconnect"
	"source $dev $meta 127.0.0.1:7000 2 secret $long|Invalid secret"
	"source $dev $meta 127.0.0.1:7000 2 chunk_size 12|Invalid chunk_size"
	"source $dev $meta 127.0.0.1:7000 4 chunk_size 4096 region_size 2048|Invalid chunk_size"
	"source /dev/does-not-exist $meta 127.0.0.1:7000|Data device lookup failed"
	"source $dev /dev/does-not-exist 127.0.0.1:7000|Metadata device lookup failed"
	"target $dev $dev 0.0.0.0:7000|Metadata device must not be the data device"
	"source 259:99999 $meta 127.0.0.1:7000|Data device lookup failed"
)

ktap_print_header
ktap_set_plan $(( ${#cases[@]} + 3 ))
# Each refused line makes dm log exactly one "table: <dev>: specmirror:"
# line; read the log once at the end and pair the i-th line with case i.
before=$(dmesg | wc -l)
# One device without a table; each bad line is loaded into it (the ioctl
# of `dmsetup load`, see sm_try_tables), which runs the same constructor
# as create without a device setup and teardown per case.
# A refused load must leave no inactive table.
dmsetup create $PREFIX-bad --notable
mapfile -t res < <(sm_try_tables $PREFIX-bad "$n" "${cases[@]%|*}")
dmsetup remove $PREFIX-bad
mapfile -t logged < <(dmesg | tail -n +$((before + 1)) | grep 'device-mapper: table: .*: specmirror: ')
for i in "${!cases[@]}"; do
	args=${cases[$i]%|*}; want=${cases[$i]##*|}
	read -r err left <<<"${res[$i]:-none none}"
	# errno 22 is EINVAL; no target may be left in the inactive table.
	if [ "$err" = 22 ] && [ "$left" = 0 ] &&
		grep -q "specmirror: .*$want.*(-EINVAL)" <<<"${logged[$i]:-}"; then
		ktap_test_pass "rejected: $args"
	else
		echo "# errno=$err inactive targets left=$left"
		echo "# logged: ${logged[$i]:-nothing}"
		ktap_test_fail "rejected: $args"
	fi
done
# A target longer than its device is refused before the metadata device
# is touched (it stays blank).
sm_check "rejected: target longer than its data device" \
	bash -c "! dmsetup create $PREFIX-big --table '0 $((n * 2)) specmirror source $dev $meta 127.0.0.1:7000' 2>/dev/null"
sm_check "the metadata device was not written" bash -c "! tr -d '\\0' < $meta | read -rn1"
sm_check "no device left behind" bash -c "! dmsetup ls | grep -q '^$PREFIX-'"
ktap_finished
