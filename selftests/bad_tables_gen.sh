#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# 204 generated malformed table lines (issue 5, scenario 9), from a seeded
# generator (bash RANDOM; the seed is printed, DMSM_BADGEN_SEED picks
# another): random tokens, huge, negative, overflowing and non-decimal
# numbers, missing words, odd optional-argument counts, unknown and
# duplicate keys, source-only keys on a target, malformed IPv4 and IPv6
# addresses and ports, unspecified peers, devices that are not block
# devices or do not exist, for both roles. Each line breaks exactly one
# rule, so the reason dm logs is known in advance.
#
# Every line must make `dmsetup create` fail with EINVAL ("Invalid
# argument"), dm must log a new "table: <dev>: specmirror: <reason>
# (-EINVAL)" line with the expected reason, and no device may remain. One
# KTAP result per category; every failing line is listed as a comment.
# Afterwards a valid device is created and removed.
#
#   bad_tables_gen.sh --list   prints the lines (category|words|reason)
#                              without running them, for checking the
#                              parser in userspace (no root needed).

# --- the generator ----------------------------------------------------------

SEED=${DMSM_BADGEN_SEED:-20261125}
RANDOM=$SEED
GEN_CAT=() GEN_ARGS=() GEN_WANT=()

# rnd N: a number in 0..N-1 into R (no subshell: $(...) would fork, and a
# forked subshell's RANDOM does not advance the parent's sequence).
rnd() { R=$((RANDOM % $1)); }
# pick WORDS...: one of the words into P.
pick() { rnd $#; local a=("$@"); P=${a[$R]}; }
# token: a random word of 1-12 characters into T (never a keyword).
# No "#": dmsetup cuts a table line there (a comment).
TOKCH=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:,=+/@%
token() {
	local len i
	rnd 12; len=$((R + 1)); T=
	for ((i = 0; i < len; i++)); do rnd ${#TOKCH}; T+=${TOKCH:R:1}; done
	case $T in
	source|target|region_size|ring_mb|mode|completion|hot_regions|secret|chunk_size) T=x$T ;;
	esac
}
# role: a random role into ROLE; endpoint: a valid endpoint for it into EP.
role() { pick source target; ROLE=$P; }
endpoint() {
	if [ "$ROLE" = target ]; then
		pick 0.0.0.0:7000 "[::]:7001" 10.78.0.2:65535 "[fd00::2]:7789" 127.0.0.1:1 "[::ffff:10.1.2.3]:8000"
	else
		pick 127.0.0.1:7000 10.78.0.2:7789 "[::1]:7001" "[fd00::2]:65535" 192.168.1.1:1 "[1:2:3:4:5:6:7:8]:9" "[::ffff:10.1.2.3]:8000"
	fi
	EP=$P
}
# validopt KEY: a valid value for KEY into V (P is left as it was).
validopt() {
	local p=$P
	case $1 in
	region_size) pick 8 2048 65536 2097152 ;;
	ring_mb) pick 1 4 64 ;;
	mode) pick speculative lock-sync ;;
	completion) pick async sync ;;
	hot_regions) pick 1 64 65536 ;;
	sync_rate) pick 0 1024 4194304 ;;
	degrade_after) pick 1 10 3600 ;;
	on_disconnect) pick degrade block ;;
	secret) pick s3cr3t 'A!b%c$d' x ;;
	esac
	V=$P P=$p
}
# keys: the keys valid for ROLE into KEYS.
keys() {
	KEYS=(region_size ring_mb secret)
	[ "$ROLE" = target ] || KEYS+=(mode completion hot_regions sync_rate degrade_after on_disconnect)
}
add() { GEN_CAT+=("$1"); GEN_ARGS+=("$2"); GEN_WANT+=("$3"); }

TWO64=18446744073709551616      # 2^64
TWO64M1=18446744073709551615    # 2^64 - 1
TWO32=4294967296                # 2^32
# Numbers that are not a decimal in range, whatever the range: signs, hex,
# exponents, fractions, suffixes, 2^32 + VALID (wraps to VALID in a u32),
# 2^64 - 1, 2^64 and just above, more digits than a u64 holds, and empty.
badnum() { # badnum VALID: into P
	pick -1 "-$1" "+$1" 0x10 0X800 1e9 "$1.0" "${1}k" "$1x" "$TWO64" "$TWO64M1" \
		"$((TWO32 + $1))" "1844674407370955161$((6 + $1 % 4))" 99999999999999999999999 "$TWO32" abc ""
}

# The two device words, data then metadata.
DEV="${GEN_DEV:-/dev/loop0} ${GEN_META:-/dev/loop1}"
PREFIX=${PREFIX:-smt}

gen_args() { # 12: fewer than role, device and address
	local i
	for ((i = 0; i < 12; i++)); do
		role; endpoint
		case $((i % 6)) in
		0) add args "" "Not enough arguments" ;;
		1) add args "$ROLE" "Not enough arguments" ;;
		2) add args "$ROLE $DEV" "Not enough arguments" ;;
		3) add args "$ROLE $EP" "Not enough arguments" ;;
		4) add args "$DEV $EP" "Not enough arguments" ;;
		5) token; add args "$T" "Not enough arguments" ;;
		esac
	done
}

gen_role() { # 16: a role that is neither source nor target
	local i
	for ((i = 0; i < 16; i++)); do
		role; endpoint
		if ((i < 8)); then
			pick Source TARGET src tgt "${ROLE}s" "-$ROLE" "$ROLE," "${ROLE:0:5}"
			add role "$P $DEV $EP" "Invalid role"
		else
			token; add role "$T $DEV $EP" "Invalid role"
		fi
	done
}

gen_ipv4() { # 24: hosts that are not a strict dotted quad
	local i
	for ((i = 0; i < 24; i++)); do
		role
		pick 256.1.1.1 1.256.1.1 1.2.3.999 1.2.3 1.2 1 1.2.3.4.5 1..2.3 .1.2.3 1.2.3. \
			0x7f.0.0.1 1.2.3.-4 +1.2.3.4 1.2.3.+4 1234.1.1.1 localhost a.b.c.d 127.1 \
			4294967295 1.2.3.4/24 "" 1.2.3.4e0 "1.2.3.4 " 10.0.0.0x1
		local host=$P
		rnd 3
		case $R in
		0) add ipv4 "$ROLE $DEV $host:7000" "Invalid address" ;;
		1) add ipv4 "$ROLE $DEV $host" "Invalid address" ;; # no port either
		2) add ipv4 "$ROLE $DEV $host:7000:$((RANDOM % 100))" "Invalid address" ;;
		esac
		# A host that is empty and no port: the word is gone, and with it
		# the address. Give a bare IP without port instead.
		if [ -z "$host" ] && [ $R = 1 ]; then
			GEN_ARGS[-1]="$ROLE $DEV 10.0.0.1"
		fi
	done
}

gen_ipv6() { # 24: bracketed IPv6 that is malformed, or IPv6 without brackets
	local i
	for ((i = 0; i < 24; i++)); do
		role
		pick "[::1:80" "[zz::1]:80" "::1:80" "fd00::1:7000" "[::1]80" "[::1]" "[1::2::3]:80" \
			"[12345::1]:80" "[1:2:3:4:5:6:7:8:9]:80" "[1:2:3:4:5:6:7]:80" "[1:2:3:4:5:6:7:8::]:80" \
			"[::1.2.3]:80" "[::1.2.3.256]:80" "[fe80::1%eth0]:80" "[]:80" "[:]:80" "[:::]:80" \
			"[[::1]]:80" "[::1]]:80" "[1.2.3.4]:80" "[0x1::]:80" "[-1::]:80" "[::1:2:3:4:5:6:7:8]:80" \
			"::ffff:1.2.3.4:80" "[1:2:3:4:5:6:1.2.3.4:5]:80" "[:1::2]:80" "[1::2:]:80" "]::1[:80"
		add ipv6 "$ROLE $DEV $P" "Invalid address"
	done
}

gen_port() { # 24: ports that are not 1-65535
	local i host
	for ((i = 0; i < 24; i++)); do
		role
		if [ "$ROLE" = target ]; then pick 0.0.0.0 "[::]" 10.78.0.2 "[fd00::2]"; else pick 127.0.0.1 "[::1]" 10.78.0.2; fi
		host=$P
		pick 0 00000 65536 65537 99999 "$((TWO32 + 80))" "$((65536 + 80))" "$TWO64" "$TWO64M1" \
			18446744073709551696 -1 -80 +80 0x50 1e3 abc 80a "" 80.0 65535.5 "80]" "80/tcp"
		add port "$ROLE $DEV $host:$P" "Invalid port"
	done
}

gen_unspec() { # 8: a source peer that is an unspecified address
	local i
	for ((i = 0; i < 8; i++)); do
		ROLE=source
		pick 0.0.0.0 "[::]" "[0:0:0:0:0:0:0:0]" "[::0]" "[0::0]" "[::0.0.0.0]" "[0000::]" 000.0.0.0 \
			"[::ffff:0.0.0.0]" "[0:0:0:0:0:ffff:0:0]"
		add unspec "source $DEV $P:$((1 + RANDOM % 65535))" "unspecified address"
	done
}

gen_optcount() { # 16: #opt_args that is not a decimal u32
	local i tail
	for ((i = 0; i < 16; i++)); do
		role; endpoint; keys; pick "${KEYS[@]}"; validopt "$P"
		tail="$P $V"
		pick x -1 -2 +2 0x2 2.0 1e1 two 2x "$TWO32" "$((TWO32 + 2))" "$TWO64" \
			"18446744073709551618" 99999999999 "0x0000002"
		# The 2-word tail makes a wrapped count look right.
		add optcount "$ROLE $DEV $EP $P $tail" "Invalid optional argument count"
	done
}

gen_optargs() { # 20: a count that does not match, or an odd count
	local i k cnt words
	for ((i = 0; i < 20; i++)); do
		role; endpoint; keys
		pick "${KEYS[@]}"; validopt "$P"; words="$P $V"
		k=2
		if ((RANDOM % 2)); then
			pick "${KEYS[@]}"; validopt "$P"
			[[ " $words " == *" $P "* ]] || { words+=" $P $V"; k=4; }
		fi
		if ((i % 2)); then
			# Odd: drop the last value, count what is left.
			words=${words% *}
			add optargs "$ROLE $DEV $EP $((k - 1)) $words" "key value pairs"
		else
			pick 0 1 3 5 $((k + 2)) $((k * 10)) 4294967295 65536
			cnt=$P
			((cnt != k)) || cnt=$((k + 2))
			add optargs "$ROLE $DEV $EP $cnt $words" "does not match"
		fi
	done
}

gen_keys() { # 20: unknown keys, a key twice, source keys on a target
	local i k
	for ((i = 0; i < 20; i++)); do
		role; endpoint; keys
		case $((i % 4)) in
		0|1)
			if ((i % 4)); then token; k=$T; else
				pick Ring_mb RING_MB ring-mb regionsize region_size= secret_ hot-regions Mode \
					completions 2 -- ringmb key
				k=$P
			fi
			pick "${KEYS[@]}"; validopt "$P"
			if ((RANDOM % 2)); then
				add keys "$ROLE $DEV $EP 4 $P $V $k 1" "Unknown optional argument"
			else
				add keys "$ROLE $DEV $EP 2 $k $V" "Unknown optional argument"
			fi
			;;
		2)
			pick "${KEYS[@]}"; k=$P; validopt "$k"
			local a="$k $V"; validopt "$k"
			if ((RANDOM % 2)); then
				add keys "$ROLE $DEV $EP 4 $a $k $V" "given twice"
			else
				local o
				for o in "${KEYS[@]}"; do [ "$o" = "$k" ] || break; done
				validopt "$o"; local b="$o $V"; validopt "$k"
				add keys "$ROLE $DEV $EP 6 $a $b $k $V" "given twice"
			fi
			;;
		3)
			ROLE=target; endpoint
			pick mode completion hot_regions sync_rate degrade_after on_disconnect; k=$P; validopt "$k"
			if ((RANDOM % 2)); then
				add keys "target $DEV $EP 2 $k $V" "source role only"
			else
				local o=$k; pick region_size ring_mb secret; validopt "$P"
				local first="$P $V"; validopt "$o"
				add keys "target $DEV $EP 4 $first $o $V" "source role only"
			fi
			;;
		esac
	done
}

gen_values() { # 24: values out of range or malformed
	local i k long
	long=$(printf 'k%.0s' {1..65})
	for ((i = 0; i < 24; i++)); do
		role; endpoint; keys; pick "${KEYS[@]}"; k=$P
		case $k in
		region_size)
			if ((RANDOM % 2)); then pick 0 1 4 7 1000 2049 3072 4194304 "$((TWO32 + 2048))"; else badnum 2048; fi
			add values "$ROLE $DEV $EP 2 region_size $P" "Invalid region_size"
			;;
		ring_mb)
			if ((RANDOM % 2)); then pick 0 4097 65536 "$((TWO32 + 1))" 1000000; else badnum 4; fi
			add values "$ROLE $DEV $EP 2 ring_mb $P" "Invalid ring_mb"
			;;
		hot_regions)
			if ((RANDOM % 2)); then pick 0 65537 131072 "$((TWO32 + 64))"; else badnum 64; fi
			add values "$ROLE $DEV $EP 2 hot_regions $P" "Invalid hot_regions"
			;;
		sync_rate)
			if ((RANDOM % 2)); then pick 4194305 8388608 "$((TWO32 + 1))"; else badnum 1024; fi
			add values "$ROLE $DEV $EP 2 sync_rate $P" "Invalid sync_rate"
			;;
		degrade_after)
			if ((RANDOM % 2)); then pick 0 3601 86400 "$((TWO32 + 10))"; else badnum 10; fi
			add values "$ROLE $DEV $EP 2 degrade_after $P" "Invalid degrade_after"
			;;
		on_disconnect)
			token; pick Degrade BLOCK wait stall 0 1 "$T"
			add values "$ROLE $DEV $EP 2 on_disconnect $P" "Invalid on_disconnect"
			;;
		mode)
			token; pick Speculative LOCK-SYNC lock_sync locksync sync async "$T"
			add values "$ROLE $DEV $EP 2 mode $P" "Invalid mode"
			;;
		completion)
			token; pick Sync ASYNC speculative 1 0 true "$T"
			add values "$ROLE $DEV $EP 2 completion $P" "Invalid completion"
			;;
		secret)
			pick "$long" "${long}kkkkkkkkkkkkkkkk" $'s\x7fcret' "sécret" $'s\x01c'
			add values "$ROLE $DEV $EP 2 secret $P" "Invalid secret"
			;;
		esac
		# Empty values vanish between words: make them a sign instead.
		[[ ${GEN_ARGS[-1]} != *" " ]] || GEN_ARGS[-1]+="-"
	done
}

gen_devices() { # 16: data or metadata devices that are not block devices or do not exist
	local i
	for ((i = 0; i < 16; i++)); do
		role; endpoint
		pick /dev/does-not-exist-$RANDOM /dev/null /dev /tmp "${GEN_FILE:-/etc/hostname}" 259:99999 0:0 \
			abc:def -1:0 253:99999 /dev/mapper/control relative/path 8:255 "$PREFIX"
		if ((i < 12)); then
			add devices "$ROLE $P ${DEV#* } $EP" "Data device lookup failed"
		else
			add devices "$ROLE ${DEV%% *} $P $EP" "Metadata device lookup failed"
		fi
	done
}

CATS=(args role ipv4 ipv6 port unspec optcount optargs keys values devices)
generate() { local c; for c in "${CATS[@]}"; do "gen_$c"; done; }

if [ "${1:-}" = --list ]; then
	generate
	for i in "${!GEN_ARGS[@]}"; do printf '%s|%s|%s\n' "${GEN_CAT[$i]}" "${GEN_ARGS[$i]}" "${GEN_WANT[$i]}"; done
	exit 0
fi

# --- the test ---------------------------------------------------------------

. "$(dirname "$(readlink -f "$0")")/lib.sh"
sm_require
# Each refused line logs three kernel lines; on the VM's serial console
# they cost more than the line itself. Keep them in the log only.
read -r CONSOLE_LEVEL _ </proc/sys/kernel/printk
cleanup() { sm_cleanup; echo "$CONSOLE_LEVEL" >/proc/sys/kernel/printk; }
trap cleanup EXIT
echo 1 >/proc/sys/kernel/printk
sm_load
GEN_DEV=$(sm_loop 16)
n=$(sm_sectors "$GEN_DEV")
GEN_FILE=${SM_FILES[0]}
GEN_META=$(sm_meta "$GEN_DEV")
DEV="$GEN_DEV $GEN_META"
generate
total=${#GEN_ARGS[@]}

ktap_print_header
ktap_set_plan $((${#CATS[@]} + 2))
echo "# seed $SEED (DMSM_BADGEN_SEED), $total lines"

# ts_of LINE: the dmesg timestamp of LINE in microseconds into TS.
ts_of() {
	local t=${1#\[}; t=${t%%]*}; t=${t// /}
	TS=$((10#${t%.*} * 1000000 + 10#${t#*.}))
}
# newlog: the "table: <dev>: specmirror:" lines logged after LAST_TS into
# LOGGED, and LAST_TS moved to the newest line. One process (dmesg).
LAST_TS=0
newlog() {
	local l
	LOGGED=()
	mapfile -t KLOG < <(dmesg)
	for l in "${KLOG[@]}"; do
		[[ $l == "["* ]] || continue
		ts_of "$l"
		((TS > LAST_TS)) || continue
		[[ $l == *"device-mapper: table: "*": specmirror: "* ]] && LOGGED+=("${l#*specmirror: }")
	done
	ts_of "${KLOG[-1]}"
	LAST_TS=$TS
}
newlog

errf=$(mktemp /tmp/smt-out.XXXXXX)
SM_FILES+=("$errf")
# run FIRST END: loads lines FIRST..END-1 into the inactive table of one
# device without a table, through one process (dm_load.py: the ioctl of
# `dmsetup load`; a dmsetup process, and a device created and removed, per
# line made this test several times slower under TCG). The errno of line
# I into RC[I] (0: accepted, and cleared again at once), the number of
# targets its load left in the inactive table into LEFT[I].
G=$PREFIX-gen
dmsetup create --notable "$G" || { echo "# dmsetup create --notable $G failed"; exit 1; }
declare -a RC LEFT
run() {
	local i k=$1 res
	mapfile -t res < <(sm_try_tables "$G" "$n" "${GEN_ARGS[@]:$1:$(($2 - $1))}" 2>"$errf")
	for ((i = $1; i < $2; i++)); do
		read -r RC[$i] LEFT[$i] <<<"${res[$((i - k))]:-none none}"
	done
}
# judge I LOGLINE: why line I is wrong into WHY (empty when it is right).
judge() {
	WHY=
	[ "${RC[$1]}" != 0 ] || { WHY="accepted"; return; }
	[ "${RC[$1]}" = 22 ] || WHY+="not EINVAL; "
	[ "${LEFT[$1]}" = 0 ] || WHY+="left a table behind; "
	[ -n "$2" ] || { WHY+="no specmirror message logged; "; return; }
	[[ $2 == *"${GEN_WANT[$1]}"* ]] || WHY+="wrong reason; "
	[[ $2 == *"(-EINVAL)" ]] || WHY+="logged error is not -EINVAL; "
}

declare -A catbad
declare -a MSG
t0=$EPOCHSECONDS
batch=50
for ((b = 0; b < total; b += batch)); do
	e=$((b + batch < total ? b + batch : total))
	run $b $e
	newlog
	refused=0
	for ((i = b; i < e; i++)); do [ "${RC[$i]}" = 0 ] || refused=$((refused + 1)); done
	if [ ${#LOGGED[@]} -eq $refused ]; then
		# One message per refused line, in order.
		k=0
		for ((i = b; i < e; i++)); do
			[ "${RC[$i]}" = 0 ] && continue
			MSG[$i]=${LOGGED[$k]}; k=$((k + 1))
		done
	else
		# Some line logged no message or more than one: run the batch
		# again one line at a time to find which.
		echo "# lines $b-$((e - 1)): ${#LOGGED[@]} messages for $refused refused lines; again one by one"
		for ((i = b; i < e; i++)); do
			run $i $((i + 1)); newlog
			MSG[$i]=${LOGGED[*]}
			[ ${#LOGGED[@]} -le 1 ] || MSG[$i]="several: ${LOGGED[*]}"
		done
	fi
	for ((i = b; i < e; i++)); do
		judge $i "${MSG[$i]:-}"
		if [ -n "$WHY" ]; then
			catbad[${GEN_CAT[$i]}]=$((${catbad[${GEN_CAT[$i]}]:-0} + 1))
			echo "# FAIL line $i (${GEN_CAT[$i]}): 0 $n specmirror ${GEN_ARGS[$i]}"
			echo "#   $WHY rc=${RC[$i]} want '${GEN_WANT[$i]}'"
			echo "#   dm_load.py: $(<"$errf")"
			echo "#   logged: ${MSG[$i]:-nothing}"
		fi
	done
done
echo "# $total lines in $((EPOCHSECONDS - t0)) s"

for c in "${CATS[@]}"; do
	cnt=0
	for ((i = 0; i < total; i++)); do [ "${GEN_CAT[$i]}" = "$c" ] && cnt=$((cnt + 1)); done
	if [ -z "${catbad[$c]:-}" ]; then
		ktap_test_pass "$c: $cnt lines refused with EINVAL and the expected reason"
	else
		ktap_test_fail "$c: ${catbad[$c]} of $cnt lines wrong"
	fi
done
# The device the lines were loaded into goes first: what is checked is
# that no refused line left a device of its own.
dmsetup remove "$G"
sm_check "no device left behind" bash -c "! dmsetup ls | grep -q '^$PREFIX-'"
valid() {
	dmsetup create $PREFIX-ok --table "0 $n specmirror target $GEN_DEV $GEN_META 127.0.0.1:7099 2 ring_mb 1" &&
	dmsetup status $PREFIX-ok && dmsetup remove $PREFIX-ok
}
sm_check "the module still works: a valid target created and removed" valid
ktap_finished
