#!/usr/bin/env python3
"""Reads a packet capture (tcpdump -w, Ethernet) of a busd DPDK link and takes it apart with no
busd code: Ethernet, IPv4, UDP, then the datagram layer (transports/dgram/wire.hpp: header, CRC32C,
chunks), the link frame (transports/link/wire.hpp) and the link body (bus/links/body.hpp) down to
the Envelope, which it writes out for flatc to decode with the project's schema.

  dgram_pcap.py CAPTURE OUTDIR [MAX]   writes OUTDIR/env-N.bin for up to MAX envelopes (default 5)
Prints one line per datagram seen ("udp SRC -> DST len L type T crc ok|BAD") and one per envelope
written ("envelope PATH"). Exit 1 when the capture holds no busd datagram.
"""
import os
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit(f"{path}: not a little-endian pcap file (magic {magic:#x})")
    linktype = struct.unpack_from("<I", data, 20)[0]
    if linktype != 1:
        raise SystemExit(f"{path}: link type {linktype}, wanted 1 (Ethernet)")
    at = 24
    while at + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, at)
        at += 16
        yield data[at:at + incl]
        at += incl


TYPES = {1: "Syn", 2: "Data", 3: "Ack", 4: "Fin"}


def main():
    capture, outdir = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    os.makedirs(outdir, exist_ok=True)
    seen = written = 0
    for frame in packets(capture):
        if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[23] != 17:  # UDP
            continue
        src = ".".join(str(b) for b in frame[26:30])
        dst = ".".join(str(b) for b in frame[30:34])
        u = 14 + ihl
        sport, dport, ulen = struct.unpack_from("!HHH", frame, u)
        payload = frame[u + 8:u + ulen]
        if len(payload) < 38 or payload[0:2] != b"bD":
            continue
        seen += 1
        ptype = payload[3]
        want = struct.unpack_from("<I", payload, 4)[0]
        got = crc32c(payload[:4] + b"\0\0\0\0" + payload[8:])
        print(f"udp {src}:{sport} -> {dst}:{dport} len {len(payload)} type {TYPES.get(ptype, ptype)} "
              f"crc {'ok' if want == got else 'BAD'}")
        if ptype != 2 or want != got:
            continue
        at = 38
        while at + 4 <= len(payload) and written < limit:
            clen, flags = struct.unpack_from("<HB", payload, at)
            chunk = payload[at + 4:at + 4 + clen]
            at += (4 + clen + 7) & ~7
            if flags != 3 or len(chunk) < 12 or chunk[0] != 1:  # a whole link Data frame
                continue
            body = chunk[12:]
            if len(body) < 8 or body[0] != 1:  # a Message body
                continue
            ids = body[1]
            env = body[(8 + 4 * ids + 7) & ~7:]
            path = os.path.join(outdir, f"env-{written}.bin")
            with open(path, "wb") as f:
                f.write(env)
            print(f"envelope {path}")
            written += 1
    if seen == 0:
        print("no busd datagram in the capture")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
