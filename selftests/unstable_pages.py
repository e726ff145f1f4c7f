#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A writer that keeps changing its buffer while its O_DIRECT writes are in
flight (what an application may do, and what a page under writeback looks
like): usage: unstable_pages.py DEV SECONDS

Threads issue 64 KiB O_DIRECT writes at random 4 KiB-aligned offsets of the
first 16 MiB of DEV, each from its own page-aligned buffer, while one more
thread rewrites those buffers all the time. The device must store *some*
content for each write; a mirror must store the same content on both sides.
"""
import mmap
import os
import random
import sys
import threading
import time

dev, seconds = sys.argv[1], float(sys.argv[2])
SIZE = 16 << 20
BS = 64 << 10
WRITERS = 4
bufs = [mmap.mmap(-1, BS) for _ in range(WRITERS)]
stop = time.monotonic() + seconds
done = [0] * WRITERS


def scribble():
    n = 0
    while time.monotonic() < stop:
        for b in bufs:
            # A new byte in every 512-byte sector, at a moving spot.
            v = n & 0xFF
            for off in range(n % 512, BS, 512):
                b[off] = v
        n += 1


def writer(i):
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    rnd = random.Random(i)
    try:
        while time.monotonic() < stop:
            off = rnd.randrange(0, SIZE - BS, 4096)
            os.pwrite(fd, bufs[i], off)
            done[i] += 1
    finally:
        os.close(fd)


threads = [threading.Thread(target=scribble)] + [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"unstable_pages: {sum(done)} writes of {BS >> 10} KiB while the buffers changed")
