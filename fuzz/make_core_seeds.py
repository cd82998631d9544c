#!/usr/bin/env python3
"""Write the seed corpora of the protocol, store and pipeline fuzz targets
(run from the repository root; output checked in under fuzz/seeds/<target>/)."""
import os
import struct

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def framed(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


# grpc_frame: first byte = split size - 1, then the wire bytes.
put("grpc_frame", "one", b"\x00" + framed(b"hello"))
put("grpc_frame", "three_split", b"\x02" + framed(b"a") + framed(b"") + framed(b"xyz" * 10))
put("grpc_frame", "truncated", b"\x00" + framed(b"hello")[:7])
put("grpc_frame", "compressed", b"\x03\x01\x00\x00\x00\x01x")
put("grpc_frame", "too_large", b"\x04\x00\x00\x00\x10\x01")

for i, t in enumerate(["1m", "10S", "99999999H", "5x", "123456789S", "0n", "7u", "3M"]):
    put("grpc_timeout", f"t{i}", t)

put("grpc_message", "special", "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n")
put("grpc_message", "percent", "100%25 done %zz %4")
put("grpc_message", "plain", "sandbox not found")

for i, v in enumerate(["q6ur", "AQ==,Ag", "AQ", "", "*", " q6ur , AA== "]):
    put("metadata_bin", f"b{i}", v)

labels = field(1, 2, b"env") + field(2, 2, b"prod")
envelope = (
    field(1, 0, 1) + field(2, 0, 2) + field(3, 2, b"2f1c1a3e-0000-4000-8000-000000000001")
    + field(4, 2, b"gh") + field(5, 0, 1_700_000_000_000) + field(6, 0, 1_700_000_000_001)
    + field(7, 0, 3) + field(8, 2, labels) + field(9, 0, 0) + field(10, 2, b"\x12\x06github")
)
put("store_record", "provider", envelope)
put("store_record", "encrypted", envelope.replace(field(9, 0, 0), field(9, 0, 1)))
put("store_record", "bad_kind", envelope.replace(field(2, 0, 2), field(2, 0, 99)))
