#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A hostile peer for hostile.sh: connects to a specmirror target, sends
one kind of bad input and checks that the target closes the connection.

    hostile_peer.py HOST PORT CASE DEV_SECTORS WAIT_S

CASE: random, magic, truncated, oversized, badcrc, wrongsecret, second.
Every case but `second` first reads the target's CHALLENGE (and checks its
magic, kind, length and CRC-32C, which also checks this file's CRC). Then
it sends its input and waits up to WAIT_S seconds for the target to close
the connection (EOF or reset). Exit status 0 when it did, 1 when the
connection stayed open or the target answered wrongly, 2 when the target
could not be reached. The wire format is Documentation/wire-protocol.rst.
"""
import hashlib
import hmac
import os
import socket
import struct
import sys
import time

MAGIC = 0x31524D53
VERSION = 4  # Documentation/wire-protocol.rst: versions 1 to 3 are refused
HEADER = struct.Struct("<IBBHQQIIII")  # 40 bytes, little-endian
HELLO = struct.Struct("<IIQQQ16s32sIIQQ64s")  # 168 bytes (generations last)
K_HELLO, K_WRITE, K_HELLO_REPLY, K_CHALLENGE = 0x01, 0x04, 0x81, 0x86
OFF_CRC = 32


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """Standard CRC-32C (Castagnoli, reflected), chainable."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def frame(kind, payload=b"", seq=0, sector=0, count=0, length=None, magic=MAGIC, crc_xor=0):
    """A frame whose CRC covers the header (crc field zero) and payload."""
    n = len(payload) if length is None else length
    hdr = HEADER.pack(magic, VERSION, kind, 0, seq, sector, count, n, 0, 0)
    crc = crc32c(payload, crc32c(hdr)) ^ crc_xor
    return hdr[:OFF_CRC] + struct.pack("<I", crc) + hdr[OFF_CRC + 4:] + payload


def hello(dev_sectors, mac=bytes(32)):
    gen = int.from_bytes(os.urandom(8), "little") | 1
    # No generations (all zero): the target applies no generation rule.
    return HELLO.pack(VERSION, 2048, dev_sectors, gen, 0, os.urandom(16), mac, 0, 0, 0, 0, bytes(64))


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError(f"EOF after {len(b)} of {n} bytes")
        b += c
    return b


def read_challenge(s):
    b = recv_exact(s, HEADER.size + 16)
    magic, ver, kind, flags, seq, sector, count, n, crc, res = HEADER.unpack(b[:40])
    zeroed = b[:OFF_CRC] + bytes(4) + b[OFF_CRC + 4:40]
    ok = (magic == MAGIC and ver == VERSION and kind == K_CHALLENGE and n == 16
          and crc == crc32c(b[40:], crc32c(zeroed)))
    if not ok:
        raise ValueError(f"bad CHALLENGE: {b.hex()}")
    return b[40:]


def wait_closed(s, wait_s):
    """Reads until EOF or reset; returns (how, seconds, bytes read)."""
    t0 = time.monotonic()
    got = b""
    while True:
        left = wait_s - (time.monotonic() - t0)
        if left <= 0:
            return "open", time.monotonic() - t0, got
        s.settimeout(left)
        try:
            c = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return "reset", time.monotonic() - t0, got
        if not c:
            return "EOF", time.monotonic() - t0, got
        got += c


def main():
    host, port, case, dev_sectors, wait_s = sys.argv[1:6]
    port, dev_sectors, wait_s = int(port), int(dev_sectors), float(wait_s)
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        print(f"{case}: cannot connect: {e}")
        return 2
    expect_reply = False
    try:
        if case != "second":
            nonce_t = read_challenge(s)
        if case == "random":
            junk = os.urandom(4096)
            if junk[:4] == struct.pack("<I", MAGIC):
                junk = b"\0" + junk[1:]
            s.sendall(junk)
        elif case == "magic":
            s.sendall(frame(K_HELLO, hello(dev_sectors), magic=MAGIC ^ 0x01000000))
        elif case == "truncated":
            # A HELLO cut short: the header and 40 of its 168 payload bytes,
            # then silence with the connection left open.
            s.sendall(frame(K_HELLO, hello(dev_sectors))[:80])
        elif case == "oversized":
            # A WRITE announcing 2 GiB of payload (the limit is 1 MiB).
            s.sendall(frame(K_WRITE, seq=1, count=2048, length=0x7FFFFFFF) + bytes(4096))
        elif case == "badcrc":
            s.sendall(frame(K_HELLO, hello(dev_sectors), crc_xor=0x00010000))
        elif case == "wrongsecret":
            h = hello(dev_sectors)
            mac = hmac.new(b"not-the-secret", b"specmirror hello v1" + nonce_t + h,
                           hashlib.sha256).digest()
            s.sendall(frame(K_HELLO, h[:48] + mac + h[80:]))
            expect_reply = True
        elif case != "second":
            print(f"unknown case {case}")
            return 2
    except (BrokenPipeError, ConnectionResetError) as e:
        if expect_reply:
            print(f"{case}: {e}")
            return 1
        # Closed by the target while we were still sending: what we want.
        print(f"{case}: connection reset while sending ({e})")
        return 0
    except (OSError, EOFError, ValueError) as e:
        print(f"{case}: {e}")
        return 1
    how, secs, got = wait_closed(s, wait_s)
    s.close()
    print(f"{case}: connection {how} after {secs:.1f} s, {len(got)} bytes received")
    if how == "open":
        return 1
    if expect_reply:
        # HELLO_REPLY refusing with code 7 (authentication), then the close.
        if len(got) != HEADER.size + HELLO.size:
            print(f"{case}: expected a HELLO_REPLY, got {got.hex()}")
            return 1
        kind = got[5]
        flags = HELLO.unpack(got[40:])[7]
        print(f"{case}: reply kind 0x{kind:02x}, refusal code {(flags >> 8) & 0xFF}")
        if kind != K_HELLO_REPLY or (flags >> 8) & 0xFF != 7:
            return 1
    elif got:
        print(f"{case}: unexpected bytes: {got[:64].hex()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
