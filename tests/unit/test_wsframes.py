"""Client frames: masked, fragmented, interleaved with control frames; misuse refused."""

from __future__ import annotations

import os
import struct

import pytest

from controller.ws.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameParser,
    close_frame,
    frame,
    parse_close,
)
from controller.ws.handshake import accept_key
from tests.support.rawws import client_frame


def test_rfc_6455_accept_key_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_masked_binary_of_every_length_class(size: int) -> None:
    payload = os.urandom(size)
    parser = FrameParser(max_message=1 << 20)
    messages = parser.feed(client_frame(OP_BINARY, payload))
    assert [(m.opcode, m.payload) for m in messages] == [(OP_BINARY, payload)]


def test_byte_by_byte_fragments_and_control_frames_in_between() -> None:
    data = (client_frame(OP_TEXT, b"hel", fin=False) + client_frame(OP_PING, b"p")
            + client_frame(0, b"lo", fin=True) + client_frame(OP_CLOSE, b"\x03\xe8"))
    parser = FrameParser(max_message=100)
    messages = []
    for byte in data:
        messages += parser.feed(bytes([byte]))
    assert [(m.opcode, m.payload) for m in messages] == [
        (OP_PING, b"p"), (OP_TEXT, b"hello"), (OP_CLOSE, b"\x03\xe8")]


@pytest.mark.parametrize(("data", "code"), [
    (client_frame(OP_TEXT, b"x", masked=False), 1002),
    (client_frame(OP_TEXT, b"x" * 101), 1009),
    (client_frame(OP_TEXT, b"x" * 60, fin=False) + client_frame(0, b"x" * 60), 1009),
    (client_frame(0, b"orphan"), 1002),
    (client_frame(OP_PING, b"x", fin=False), 1002),
    (client_frame(OP_PING, b"x" * 126), 1002),
    (client_frame(3, b"x"), 1002),
    (client_frame(0xB, b""), 1002),
    (bytes([0xC1, 0x80]) + b"\x00" * 4, 1002),
    (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), 1002),
    (client_frame(OP_TEXT, b"\xed\xa0\x80"), 1007),
    (client_frame(OP_TEXT, b"\xc0\xaf"), 1007),
    (client_frame(OP_TEXT, b"ok \xce"), 1007),
])
def test_misuse_sets_failure_with_the_close_code(data: bytes, code: int) -> None:
    parser = FrameParser(max_message=100)
    assert parser.feed(data) == []
    assert parser.failure is not None
    assert parser.failure.code == code
    assert parser.feed(client_frame(OP_PING, b"")) == []  # nothing after a break


def test_messages_before_a_break_come_out() -> None:
    parser = FrameParser(max_message=100)
    messages = parser.feed(client_frame(OP_PING, b"a") + client_frame(OP_TEXT, b"{}")
                           + client_frame(5, b""))
    assert [(m.opcode, m.payload) for m in messages] == [(OP_PING, b"a"), (OP_TEXT, b"{}")]
    assert parser.failure is not None and parser.failure.code == 1002


def test_invalid_utf8_fails_on_the_first_fragment_and_in_the_middle_of_a_frame() -> None:
    parser = FrameParser(max_message=1000)
    assert parser.feed(client_frame(OP_TEXT, b"ok \xff" + b"x" * 100, fin=False)[:20]) == []
    assert parser.failure is not None and parser.failure.code == 1007


def test_a_character_split_across_fragments_is_valid() -> None:
    parser = FrameParser(max_message=1000)
    data = client_frame(OP_TEXT, b"\xce", fin=False) + client_frame(0, b"\xba")
    messages = [m for byte in data for m in parser.feed(bytes([byte]))]
    assert [(m.opcode, m.payload.decode()) for m in messages] == [(OP_TEXT, "\u03ba")]
    assert parser.failure is None


@pytest.mark.parametrize(("payload", "expected"), [
    (b"", (None, "")),
    (b"\x03\xe8", (1000, "")),
    (b"\x0f\xa0bye \xc3\xa9", (4000, "bye \u00e9")),
    (b"\x03\xf4", (1012, "")),
])
def test_close_bodies_that_are_valid(payload: bytes, expected: tuple[int | None, str]) -> None:
    assert parse_close(payload) == expected


@pytest.mark.parametrize(("payload", "code"), [
    (b"\x03", 1002),
    *[(struct.pack("!H", c), 1002) for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100,
                                              2000, 2999, 5000, 65535)],
    (b"\x03\xe8\xff", 1007),
])
def test_close_bodies_that_are_refused(payload: bytes, code: int) -> None:
    with pytest.raises(FrameError) as info:
        parse_close(payload)
    assert info.value.code == code


def test_close_reasons_are_cut_on_a_character_boundary() -> None:
    reason = "\u00e9" * 100  # 200 bytes of UTF-8
    body = close_frame(4400, reason)[4:]
    assert len(body) == 122  # 61 whole characters; 123 would split one
    assert body.decode() == "\u00e9" * 61
    assert close_frame(None) == b"\x88\x00"


def test_server_frames_are_unmasked_and_final() -> None:
    assert frame(OP_TEXT, b"hi") == b"\x81\x02hi"
    assert frame(OP_TEXT, b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
