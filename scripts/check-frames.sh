#!/usr/bin/env bash
# Fails if a function of a built module reserves a stack frame larger than
# LIMIT bytes (default 8192). A release kernel has 16 KiB stacks (the debug
# kernel's KASAN doubles them, UML's are 32 KiB), so a frame that big in
# the table constructor overflows there while every test kernel survives
# it: 0.8.1's first build did (SourceDev::new: 13.0 KiB before 0.8.1,
# then over 14 KiB in the release build, 21 KiB with KASAN, with the source
# machine passed by value three times). make check runs this on the debug
# (KASAN) build, whose frames are the largest (4 KiB at most since).
#
#   scripts/check-frames.sh MODULE.ko [LIMIT]
set -euo pipefail
mod=${1:?usage: check-frames.sh MODULE.ko [LIMIT]}
limit=${2:-8192}
llvm-objdump-19 -d --no-show-raw-insn "$mod" | python3 -c '
import re, sys
limit = int(sys.argv[1])
fn, worst = None, []
for line in sys.stdin:
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line.strip())
    if m:
        fn = m.group(1)
        continue
    m = re.search(r"subq\s+\$0x([0-9a-f]+), *%rsp", line)
    if m and fn:
        worst.append((int(m.group(1), 16), fn))
worst.sort(reverse=True)
big = [(v, f) for v, f in worst if v > limit]
for v, f in (big or worst[:1]):
    print(f"frames: {v} bytes: {f}")
if big:
    print(f"frames: {len(big)} function(s) over {limit} bytes", file=sys.stderr)
    sys.exit(1)
print(f"frames: largest {worst[0][0] if worst else 0} bytes, limit {limit}")
' "$limit"
