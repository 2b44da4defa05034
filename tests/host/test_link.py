"""The host side of the protocol without a device: framing, CRC, resynchronisation on garbage, and the C header
the firmware is generated from."""

import struct

import pytest

from roma.host import protocol as P
from roma.host.link import Link, LinkError


class FakePort:
    """Bytes the 'device' has sent, handed out in small pieces as a serial port would."""

    def __init__(self, data=b""):
        self.rx = bytearray(data)
        self.tx = bytearray()

    def read(self, n):
        chunk = bytes(self.rx[:min(n, 3)])
        del self.rx[:len(chunk)]
        return chunk

    def write(self, data):
        self.tx += data

    def flush(self):
        pass

    def close(self):
        pass


def test_frame_layout_and_crc():
    f = P.frame(P.TYPES["PING"], 7, b"abc")
    assert f[:2] == P.SYNC
    version, type_, seq, length = struct.unpack_from(P.HEADER_FMT, f, 2)
    assert (version, type_, seq, length) == (P.VERSION, P.TYPES["PING"], 7, 3)
    assert struct.unpack("<H", f[-2:])[0] == P.crc16(f[2:-2])
    # CRC-16/CCITT-FALSE check value
    assert P.crc16(b"123456789") == 0x29B1


def test_recv_skips_garbage_and_bad_crc_frames():
    good = P.frame(P.TYPES["ACK"], 3, b"ok")
    bad = bytearray(P.frame(P.TYPES["ACK"], 2, b"no"))
    bad[-1] ^= 1
    link = Link(FakePort(b"\x00\xa5junk" + bytes(bad) + b"\xa5\x5a\x09" + good), timeout=1)
    f = link.recv()
    assert (f.type, f.seq, f.payload) == (P.TYPES["ACK"], 3, b"ok")
    assert link.dropped == 1


def test_recv_times_out_clearly():
    with pytest.raises(LinkError, match="no answer"):
        Link(FakePort(P.frame(P.TYPES["ACK"], 1, b"x")[:-1]), timeout=0.2).recv()


def test_c_header_carries_every_number():
    h = P.c_header()
    for k, v in P.TYPES.items():
        assert f"#define T_{k} 0x{v:02x}" in h
    for k, v in P.ERRORS.items():
        assert f"#define ERR_{k} {v}" in h
    assert f"#define PROTO_GENERATE_SIZE {struct.calcsize(P.GENERATE_FMT)}" in h
