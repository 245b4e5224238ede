"""The register protocol: packets, framing, resynchronisation, and a fuzzed decoder."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil_tune.drivers import ProtocolError
from hil_tune.drivers import protocol as p

packets = st.builds(
    p.Packet,
    seq=st.integers(0, 0xFFFF),
    code=st.integers(0, 255),
    payload=st.binary(max_size=300),
)


@given(packets)
def test_packets_round_trip_through_the_wire(packet):
    assert p.StreamDecoder().feed(p.frame_packet(packet)) == [packet]


@given(st.lists(packets, min_size=1, max_size=5), st.binary(max_size=64))
def test_decoder_resynchronises_after_garbage(packets_, garbage):
    dec = p.StreamDecoder()
    # Garbage, then a delimiter (what a retry sends first), then the real packets.
    wire = garbage + b"\x00" + b"".join(p.frame_packet(x) for x in packets_)
    assert dec.feed(wire) == packets_


@given(packets, st.data())
def test_a_flipped_bit_is_never_accepted(packet, data):
    body = bytearray(p.encode_body(packet))
    i = data.draw(st.integers(0, len(body) - 1))
    body[i] ^= 1 << data.draw(st.integers(0, 7))
    dec = p.StreamDecoder()
    got = dec.feed(p.frame_packet_body(bytes(body)))
    assert got == [] and dec.rejected == 1


@settings(max_examples=300, deadline=1000)
@given(st.lists(st.binary(max_size=2000), max_size=8))
def test_fuzzed_streams_never_crash_hang_or_pass_a_bad_crc(chunks):
    dec = p.StreamDecoder()
    for chunk in chunks:
        for packet in dec.feed(chunk):
            # Anything accepted must be a packet whose CRC and version check out.
            body = p.encode_body(packet)
            assert zlib.crc32(body[:-4]) == int.from_bytes(body[-4:], "little")
    assert len(dec._buf) <= dec.MAX_ENCODED


def test_an_endless_run_without_delimiter_is_dropped_not_buffered():
    dec = p.StreamDecoder()
    dec.feed(b"\x01" * (dec.MAX_ENCODED + 10))
    assert dec.rejected == 1 and len(dec._buf) == 0


def test_decode_body_says_what_is_wrong():
    good = p.encode_body(p.Packet(7, p.Cmd.HELLO))
    with pytest.raises(ProtocolError, match="bad CRC"):
        p.decode_body(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ProtocolError, match="bytes"):
        p.decode_body(b"\x01\x02")
    wrong_version = bytes([9]) + good[1:-4]
    with pytest.raises(ProtocolError, match="version 9"):
        p.decode_body(wrong_version + zlib.crc32(wrong_version).to_bytes(4, "little"))


def test_payload_helpers_round_trip_and_reject_bad_lengths():
    entries = [(0x100, 5), (0x104, -3)]
    assert p.parse_write_request(p.write_request(entries, commit=True)) == (entries, True)
    assert p.parse_read_request(p.read_request([1, 2, 3])) == [1, 2, 3]
    with pytest.raises(ProtocolError):
        p.parse_write_request(p.write_request(entries, commit=False)[:-1])
    header = p.FrameHeader(1, 2, 3, 4, 5, 4 * 5 * 3, 40, "RGGB")
    assert p.FrameHeader.unpack(header.pack()) == header
    with pytest.raises(ProtocolError, match="image length"):
        p.FrameHeader.unpack(p.FrameHeader(1, 2, 3, 4, 5, 7, 40, "RGGB").pack())
