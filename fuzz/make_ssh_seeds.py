#!/usr/bin/env python3
"""Seeds for the SSH fuzz targets (fuzz/seeds/ssh_*); tests/fuzz_seeds.rs
checks that `valid*` seeds parse and the others are refused."""

import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def string(b):
    return struct.pack(">I", len(b)) + b


def write(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def kexinit(kex=b"curve25519-sha256,kex-strict-s-v00@openssh.com", tail=b""):
    c = b"chacha20-poly1305@openssh.com"
    lists = [kex, b"ssh-ed25519", c, c, b"hmac-sha2-256", b"hmac-sha2-256", b"none", b"none", b"", b""]
    return bytes([20]) + b"\x07" * 16 + b"".join(string(l) for l in lists) + b"\x00" + b"\x00" * 4 + tail


def packet(payload):
    pad = 8 - (5 + len(payload)) % 8
    if pad < 4:
        pad += 8
    return struct.pack(">IB", 1 + len(payload) + pad, pad) + payload + b"\x00" * pad


write("ssh_kexinit", "valid", kexinit())
write("ssh_kexinit", "valid_empty_lists", kexinit(kex=b""))
write("ssh_kexinit", "trailing", kexinit(tail=b"x"))
write("ssh_kexinit", "truncated", kexinit()[:40])
write("ssh_kexinit", "space_in_list", kexinit(kex=b"a b"))

chan = struct.pack(">I", 0)
write("ssh_channel", "valid_data", bytes([94]) + chan + string(b"hello"))
write("ssh_channel", "valid_extended", bytes([95]) + chan + struct.pack(">I", 1) + string(b"err"))
write("ssh_channel", "valid_exit_status", bytes([98]) + chan + string(b"exit-status") + b"\x00" + struct.pack(">I", 7))
write(
    "ssh_channel",
    "valid_exit_signal",
    bytes([98]) + chan + string(b"exit-signal") + b"\x00" + string(b"KILL") + b"\x01" + string(b"killed") + string(b""),
)
write("ssh_channel", "valid_confirmation", bytes([91]) + chan + chan + struct.pack(">II", 1 << 20, 32768))
write("ssh_channel", "data_too_long", bytes([94]) + chan + struct.pack(">I", 100) + b"short")
write("ssh_channel", "trailing", bytes([97]) + chan + b"x")

# Packet seeds start with the split byte of fuzz_targets/ssh_packet.rs.
write("ssh_packet", "valid_two", b"\x03" + packet(kexinit()) + packet(b"\x15"))
write("ssh_packet", "valid_version_like_garbage", b"\x00" + packet(bytes([94]) + chan + string(b"x" * 300)))
write("ssh_packet", "over_cap", b"\x00" + struct.pack(">I", 35001 + 7) + b"\x04")
write("ssh_packet", "bad_padding", b"\x00" + struct.pack(">IB", 12, 2) + b"\x00" * 11)
