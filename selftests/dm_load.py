#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Loads many table lines, one after the other, into the inactive table of
one existing device (DM_TABLE_LOAD, the ioctl `dmsetup load` makes), and
clears each line that is accepted (DM_TABLE_CLEAR).

Under TCG one dmsetup process costs about a second; the malformed-table
tests load hundreds of lines, so they go through this one process instead.

Usage: dm_load.py DEVICE <lines
stdin holds the lines, each "<start> <length> <type> <params>", separated
by NUL bytes (a generated line may hold any other byte). For each line one
output line: "<errno> <targets left in the inactive table>", errno 0 when
the kernel accepted the line (it is then cleared again).
"""
import errno
import fcntl
import os
import struct
import sys

DM_IOCTL = 0xFD
DM_TABLE_LOAD_CMD = 9
DM_TABLE_CLEAR_CMD = 10
DM_TABLE_STATUS_CMD = 12
DM_QUERY_INACTIVE_TABLE_FLAG = 1 << 12

# struct dm_ioctl (include/uapi/linux/dm-ioctl.h): version[3], data_size,
# data_start, target_count, open_count, flags, event_nr, padding, dev,
# name[128], uuid[129], data[7].
DM_IOCTL_FMT = "=3IIIIiIIIQ128s129s7s"
DM_IOCTL_LEN = struct.calcsize(DM_IOCTL_FMT)  # 312
# struct dm_target_spec: sector_start, length, status, next, target_type[16].
SPEC_FMT = "=QQiI16s"
SPEC_LEN = struct.calcsize(SPEC_FMT)  # 40


def iowr(cmd):
    return (3 << 30) | (DM_IOCTL_LEN << 16) | (DM_IOCTL << 8) | cmd


def header(name, data_size, target_count=0, flags=0):
    return struct.pack(DM_IOCTL_FMT, 4, 0, 0, data_size, DM_IOCTL_LEN,
                       target_count, 0, flags, 0, 0, 0,
                       name.encode(), b"", b"")


def call(fd, cmd, buf):
    """The ioctl on a mutable copy of buf; (errno, result bytes)."""
    b = bytearray(buf)
    try:
        fcntl.ioctl(fd, iowr(cmd), b, True)
    except OSError as e:
        return e.errno, bytes(b)
    return 0, bytes(b)


def load(fd, name, line):
    """DM_TABLE_LOAD of one table line; its errno (0: loaded)."""
    parts = line.split(None, 3)
    if len(parts) < 3:
        return errno.EINVAL
    try:
        start, length = int(parts[0]), int(parts[1])
    except ValueError:
        return errno.EINVAL
    ttype = parts[2].encode()
    params = (parts[3] if len(parts) > 3 else "").encode("utf-8", "surrogateescape") + b"\0"
    if len(ttype) >= 16:
        return errno.EINVAL
    spec_size = SPEC_LEN + len(params)
    spec_size += -spec_size % 8
    spec = struct.pack(SPEC_FMT, start, length, 0, spec_size, ttype)
    body = (spec + params).ljust(spec_size, b"\0")
    # A spare buffer after the data, as libdevmapper leaves one.
    total = DM_IOCTL_LEN + len(body) + 16 * 1024
    buf = header(name, total, target_count=1) + body
    buf = buf.ljust(total, b"\0")
    err, _ = call(fd, DM_TABLE_LOAD_CMD, buf)
    return err


def inactive_targets(fd, name):
    """Targets in the device's inactive table (-errno on failure)."""
    total = DM_IOCTL_LEN + 16 * 1024
    buf = header(name, total, flags=DM_QUERY_INACTIVE_TABLE_FLAG).ljust(total, b"\0")
    err, out = call(fd, DM_TABLE_STATUS_CMD, buf)
    if err:
        return -err
    return struct.unpack_from(DM_IOCTL_FMT, out)[5]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: dm_load.py DEVICE <NUL-separated table lines")
    name = sys.argv[1]
    fd = os.open("/dev/mapper/control", os.O_RDWR)
    data = sys.stdin.buffer.read()
    lines = data.split(b"\0")
    if lines and lines[-1] == b"":
        lines.pop()
    out = sys.stdout
    for raw in lines:
        err = load(fd, name, raw.decode("utf-8", "surrogateescape"))
        if err == 0:
            cerr, _ = call(fd, DM_TABLE_CLEAR_CMD,
                           header(name, DM_IOCTL_LEN))
            if cerr:
                print(f"dm_load.py: clear failed: errno {cerr}", file=sys.stderr)
        out.write(f"{err} {inactive_targets(fd, name)}\n")
        out.flush()
    os.close(fd)


if __name__ == "__main__":
    main()
