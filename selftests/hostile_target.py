#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""A fake target for hostile_source.sh: listens where a specmirror source
connects and misbehaves on every connection it accepts.

    hostile_target.py HOST PORT CASE SECRET WINDOW_S WAIT_S
    hostile_target.py HOST PORT serve SECRET


CASE, what the fake sends on each connection:
  random      4 KiB of random bytes instead of a CHALLENGE
  magic       a CHALLENGE with a wrong magic (valid CRC)
  truncated   the first 30 bytes of a CHALLENGE, then silence
  oversized   a CHALLENGE header announcing 2 GiB of payload
  badcrc      a CHALLENGE with a bad CRC
  badmac      CHALLENGE, then a HELLO_REPLY signed with the wrong secret
  devsize     CHALLENGE, then a correctly signed HELLO_REPLY with the
              wrong device size (the source must refuse)
  regionsize  the same with the wrong region size
  badack      a valid handshake, then an ACK for a seq never sent
  garbage     a valid handshake, then 4 KiB of random bytes

SECRET is the source's secret (`-` for none): the fake signs its
HELLO_REPLY with it, so that the valid handshakes are valid. The fake
accepts connections for WINDOW_S seconds, one at a time; after sending its
input it reads (and discards) whatever the source sends, waiting up to
WAIT_S seconds for the source to close the connection (EOF or reset).
Every HELLO the source sends is checked (magic, kind, length, CRC-32C).
The last line is `connections=N closed=N`; exit status 0 when at least one
connection came and the source closed every one, 1 otherwise, 2 when the
address cannot be bound.

With `serve` the fake runs case after case, each read from a line
`CASE WINDOW_S WAIT_S` on its standard input, answered as above and ended
by the `connections=N closed=N ok=0|1` line (the port is closed between
cases), until EOF: one process for every case, as starting Python costs
seconds in the test VM. The wire format is Documentation/wire-protocol.rst.
"""
import hashlib
import hmac
import os
import socket
import struct
import sys
import time

from hostile_peer import (HEADER, HELLO, MAGIC, VERSION, K_HELLO, K_HELLO_REPLY,
                          K_CHALLENGE, OFF_CRC, crc32c, frame, recv_exact,
                          wait_closed)

K_ACK = 0x82
CASES = ("random", "magic", "truncated", "oversized", "badcrc", "badmac",
         "devsize", "regionsize", "badack", "garbage")


def junk(n):
    b = os.urandom(n)
    if b[:4] == struct.pack("<I", MAGIC):
        b = b"\0" + b[1:]
    return b


def read_hello(s):
    """The source's HELLO, checked; returns its fields (a tuple)."""
    b = recv_exact(s, HEADER.size + HELLO.size)
    magic, ver, kind, flags, seq, sector, count, n, crc, res = HEADER.unpack(b[:40])
    zeroed = b[:OFF_CRC] + bytes(4) + b[OFF_CRC + 4:40]
    if not (magic == MAGIC and ver == VERSION and kind == K_HELLO and n == HELLO.size
            and crc == crc32c(b[40:], crc32c(zeroed))):
        raise ValueError(f"bad HELLO from the source: {b.hex()}")
    return HELLO.unpack(b[40:])


def reply(hello, nonce_t, secret, dev_delta=0, region_mul=1):
    """A HELLO_REPLY accepting the source's HELLO (unless the sizes are
    changed), signed with `secret` (None: an all-zero MAC)."""
    ver, region, dev, gen, base, nonce_s, _mac, _flags, _res = hello[:9]
    # A new target (no generation): the source plans an initial sync.
    body = HELLO.pack(ver, region * region_mul, dev + dev_delta, gen, base, nonce_t,
                      bytes(32), 0, 0, 0, 0, bytes(64))
    if secret is not None:
        mac = hmac.new(secret, b"specmirror reply v1" + nonce_s + body, hashlib.sha256).digest()
        body = body[:48] + mac + body[80:]
    return frame(K_HELLO_REPLY, body)


def misbehave(s, case, secret):
    """Sends this case's input; returns a note for the log."""
    nonce_t = os.urandom(16)
    challenge = frame(K_CHALLENGE, nonce_t)
    if case == "random":
        s.sendall(junk(4096))
        return "random bytes"
    if case == "magic":
        s.sendall(frame(K_CHALLENGE, nonce_t, magic=MAGIC ^ 0x01000000))
        return "wrong magic"
    if case == "truncated":
        s.sendall(challenge[:30])
        return "30 of 56 bytes"
    if case == "oversized":
        s.sendall(frame(K_CHALLENGE, nonce_t, length=0x7FFFFFFF) + bytes(4096))
        return "len 0x7fffffff"
    if case == "badcrc":
        s.sendall(frame(K_CHALLENGE, nonce_t, crc_xor=0x00010000))
        return "bad CRC"
    s.sendall(challenge)
    hello = read_hello(s)
    if case == "badmac":
        s.sendall(reply(hello, nonce_t, b"not-the-secret"))
        return "HELLO_REPLY with a wrong MAC"
    if case == "devsize":
        s.sendall(reply(hello, nonce_t, secret, dev_delta=8))
        return f"HELLO_REPLY with dev_sectors {hello[2] + 8} (source: {hello[2]})"
    if case == "regionsize":
        s.sendall(reply(hello, nonce_t, secret, region_mul=2))
        return f"HELLO_REPLY with region_sectors {hello[1] * 2} (source: {hello[1]})"
    s.sendall(reply(hello, nonce_t, secret))
    if case == "badack":
        s.sendall(frame(K_ACK, seq=1 << 40))
        return "valid handshake, then ACK(2^40)"
    s.sendall(junk(4096))
    return "valid handshake, then random bytes"


def run_case(host, port, case, secret, window, wait_s):
    """Listens for `window` seconds; returns 0, 1 or 2 as main() does."""
    if case not in CASES:
        print(f"unknown case {case}", flush=True)
        print("connections=0 closed=0 ok=0", flush=True)
        return 2
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        ls.bind((host, port))
    except OSError as e:
        print(f"{case}: cannot bind {host}:{port}: {e}", flush=True)
        print("connections=0 closed=0 ok=0", flush=True)
        return 2
    ls.listen(4)
    t0 = time.monotonic()
    conns = closed = 0
    ok = True
    while True:
        left = window - (time.monotonic() - t0)
        if left <= 0:
            break
        ls.settimeout(left)
        try:
            s, peer = ls.accept()
        except socket.timeout:
            break
        conns += 1
        t_acc = time.monotonic() - t0
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(10)
        try:
            note = misbehave(s, case, secret)
            how, secs, got = wait_closed(s, wait_s)
        except (BrokenPipeError, ConnectionResetError) as e:
            note, how, secs, got = f"({e})", "reset", 0.0, b""
        except (OSError, EOFError, ValueError) as e:
            print(f"{case}: connection {conns} at +{t_acc:.1f} s: {e}", flush=True)
            ok = False
            s.close()
            continue
        s.close()
        print(f"{case}: connection {conns} at +{t_acc:.1f} s: {note}; "
              f"{how} after {secs:.1f} s, {len(got)} bytes received", flush=True)
        if how == "open":
            ok = False
        else:
            closed += 1
    ls.close()
    rc = 0 if ok and conns > 0 and closed == conns else 1
    print(f"connections={conns} closed={closed} ok={int(rc == 0)}", flush=True)
    return rc


def main():
    host, port, case, secret = sys.argv[1:5]
    port = int(port)
    secret = None if secret == "-" else secret.encode()
    if case != "serve":
        return run_case(host, port, case, secret, float(sys.argv[5]), float(sys.argv[6]))
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        w = line.split()
        if len(w) != 3:
            print(f"bad command {line.strip()!r}", flush=True)
            print("connections=0 closed=0 ok=0", flush=True)
            continue
        run_case(host, port, w[0], secret, float(w[1]), float(w[2]))


if __name__ == "__main__":
    sys.exit(main())
