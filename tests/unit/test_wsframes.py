"""Client frames: masked, fragmented, interleaved with control frames; misuse refused."""

from __future__ import annotations

import os
import struct

import pytest

from controller.wsframes import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameParser,
    accept_key,
    frame,
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += struct.pack("!BH", mask_bit | 126, size)
    else:
        head += struct.pack("!BQ", mask_bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_rfc_6455_accept_key_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_masked_text_of_every_length_class(size: int) -> None:
    payload = os.urandom(size)
    parser = FrameParser(max_message=1 << 20)
    messages = parser.feed(client_frame(OP_TEXT, payload))
    assert [(m.opcode, m.payload) for m in messages] == [(OP_TEXT, payload)]


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
    (client_frame(3, b"x"), 1002),
    (bytes([0xC1, 0x80]) + b"\x00" * 4, 1002),
])
def test_misuse_raises_with_the_close_code(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as info:
        FrameParser(max_message=100).feed(data)
    assert info.value.code == code


def test_server_frames_are_unmasked_and_final() -> None:
    assert frame(OP_TEXT, b"hi") == b"\x81\x02hi"
    assert frame(OP_TEXT, b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
