#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Rebuilds what a disk with a volatile write cache would hold after a
power loss, from a dm-log-writes log (Documentation/admin-guide/
device-mapper/log-writes.rst; the format is the kernel's
drivers/md/dm-log-writes.c).

dm-log-writes logs a write only once a flush covered it, or at once for a
FUA write; writes still unflushed when the table goes are logged after the
last flush entry. This replays onto DEV (which must hold what the logged
device held when the log started) every entry up to the last FLUSH entry,
then only the FUA writes after it: the worst a power loss can leave.
With --mark NAME it stops at the MARK entry NAME (`dmsetup message DEV 0
mark NAME`): the worst a power loss at that moment can leave.

usage: log_replay.py [--mark NAME] LOG DEV
Prints one line: entries replayed, and writes dropped after the last flush
(the writes the "power loss" took, and their sectors).
"""
import os
import struct
import sys

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")


def entries(log, mark=None):
    """(flags, sector, nr_sectors, data offset) of every entry, in order
    (up to the MARK entry named `mark`, if given; it must exist)."""
    magic, version, n, ssz = SUPER.unpack(os.pread(log, SUPER.size, 0))
    if magic != MAGIC or version != 1:
        sys.exit(f"log_replay: no dm-log-writes log (magic {magic:#x}, version {version})")
    pos = ssz
    out = []
    for _ in range(n):
        sector, nr, flags, data_len = ENTRY.unpack(os.pread(log, ENTRY.size, pos))
        if mark is not None and flags & MARK:
            # The mark's name follows the entry in its sector.
            name = os.pread(log, data_len, pos + ENTRY.size).decode(errors="replace")
            if name == mark:
                return ssz, out
        pos += ssz
        out.append((flags, sector, nr, pos))
        if not flags & DISCARD:
            pos += nr * ssz
    if mark is not None:
        sys.exit(f"log_replay: no mark {mark!r} in the log")
    return ssz, out


def main():
    args = sys.argv[1:]
    mark = None
    if args[:1] == ["--mark"] and len(args) >= 2:
        mark, args = args[1], args[2:]
    if len(args) != 2:
        sys.exit(__doc__)
    log = os.open(args[0], os.O_RDONLY)
    dev = os.open(args[1], os.O_WRONLY)
    ssz, ents = entries(log, mark)
    last = max((i for i, e in enumerate(ents) if e[0] & FLUSH), default=-1)
    replayed = dropped = dropped_sectors = 0
    for i, (flags, sector, nr, data) in enumerate(ents):
        if flags & MARK or nr == 0:
            continue
        # Up to the last flush everything is on the disk (a FLUSH entry's
        # own data only with FUA: it went after the flush); after it, only
        # FUA writes are.
        keep = i < last or flags & FUA
        if not keep:
            dropped += 1
            dropped_sectors += nr
            continue
        if flags & DISCARD:
            os.pwrite(dev, bytes(nr * ssz), sector * ssz)
        else:
            os.pwrite(dev, os.pread(log, nr * ssz, data), sector * ssz)
        replayed += 1
    os.fsync(dev)
    print(f"replayed {replayed} of {len(ents)} entries; a power loss after flush entry {last} "
          f"dropped {dropped} writes ({dropped_sectors} sectors)")


if __name__ == "__main__":
    main()
