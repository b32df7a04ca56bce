"""Domain wire format: framing, escaping, and refusal of malformed, oversized and hostile XML."""

from __future__ import annotations

import struct

import pytest

from workbench.domain.protocol import MAX_FRAME_BYTES, FrameDecoder, Message, ProtocolError, encode_frame


def test_round_trip_with_escaping_and_children():
    message = Message.make("Request", Message.make("Option", Name="--dba-user", Value='d"<&>\'ba'),
                           Type="StartProcess", Database="teas", Initialize=True, Skip=None)
    frames = encode_frame(message) + encode_frame(Message.make("Ping"))
    decoder = FrameDecoder()
    received = list(decoder.feed(frames[:7])) + list(decoder.feed(frames[7:]))
    assert received[0] == Message("Request", {"Type": "StartProcess", "Database": "teas", "Initialize": "true"},
                                  [Message("Option", {"Name": "--dba-user", "Value": 'd"<&>\'ba'})])
    assert received[1].tag == "Ping" and decoder.pending_bytes == 0
    assert received[0].find("Option")[0].require("Value") == 'd"<&>\'ba'
    with pytest.raises(ProtocolError, match="lacks the Peer attribute"):
        received[0].require("Peer")


def test_byte_at_a_time_feeding():
    data = encode_frame(Message.make("Event", Type="ProcessJoined", Pid=48802))
    decoder = FrameDecoder()
    got = [m for i in range(len(data)) for m in decoder.feed(data[i:i + 1])]
    assert [m.attrs for m in got] == [{"Type": "ProcessJoined", "Pid": "48802"}]


def test_torn_message_is_visible_as_pending_bytes():
    data = encode_frame(Message.make("Request", Type="Peers"))
    decoder = FrameDecoder()
    assert list(decoder.feed(data[:-3])) == []
    assert decoder.pending_bytes == len(data) - 3


@pytest.mark.parametrize("xml, match", [
    (b"<Request", "malformed"),
    (b"not xml at all", "malformed"),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>', "forbidden"),
    (b'<!DOCTYPE r [<!ENTITY a "a"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>', "forbidden"),
    (b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>', "forbidden"),
    (b"<a>" * 40 + b"</a>" * 40, "deeper"),
])
def test_hostile_and_malformed_xml_is_refused(xml, match):
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match=match):
        list(decoder.feed(struct.pack(">I", len(xml)) + xml))


def test_oversized_frame_is_refused_before_its_body_arrives():
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="too large") as info:
        list(decoder.feed(struct.pack(">I", MAX_FRAME_BYTES + 1)))
    assert info.value.limit == MAX_FRAME_BYTES
    with pytest.raises(ProtocolError, match="too large"):
        encode_frame(Message.make("Big", Data="x" * (MAX_FRAME_BYTES + 1)))
