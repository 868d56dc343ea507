"""RFC 6455 framing for the server side of /ws: the handshake answer, frames we send, and a
small incremental parser for what clients send (masked, possibly fragmented, with control
frames in between). Clients send little (ops, pongs, close), so clarity beats speed here;
the hot path, server to client, is frames built once in ``hub``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Final

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_TOO_BIG: Final = 1009


class FrameError(Exception):
    """The peer broke the protocol; close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(client_key: str) -> str:
    return base64.b64encode(hashlib.sha1(client_key.encode() + GUID).digest()).decode()


def handshake_response(client_key: str) -> bytes:
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(client_key)}\r\n\r\n").encode()


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked, final frame (server-to-client frames are never masked)."""
    size = len(payload)
    head = 0x80 | opcode
    if size < 126:
        return bytes((head, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", head, 126, size) + payload
    return struct.pack("!BBQ", head, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    return frame(OP_TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])


PING_FRAME: Final = frame(OP_PING)


def unmask(mask: bytes, data: bytes) -> bytes:
    if not data:
        return data
    size = len(data)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


@dataclass(slots=True)
class Message:
    opcode: int
    payload: bytes


@dataclass(slots=True)
class FrameParser:
    """Feed bytes in, get whole messages out; control frames come out as they arrive."""

    max_message: int
    _buffer: bytearray = field(default_factory=bytearray)
    _fragments: list[bytes] = field(default_factory=list)
    _fragment_opcode: int = 0
    _fragment_size: int = 0

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while True:
            parsed = self._next_frame()
            if parsed is None:
                return out
            fin, opcode, payload = parsed
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                out.append(message)

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
        if not second & 0x80:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        size, offset = second & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return None
            size, offset = struct.unpack_from("!H", buf, 2)[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, offset = struct.unpack_from("!Q", buf, 2)[0], 10
        opcode = first & 0x0F
        if opcode >= OP_CLOSE and (size > 125 or not first & 0x80):
            raise FrameError(CLOSE_PROTOCOL_ERROR, "bad control frame")
        if size > self.max_message:
            raise FrameError(CLOSE_TOO_BIG, f"message larger than {self.max_message} bytes")
        end = offset + 4 + size
        if len(buf) < end:
            return None
        mask = bytes(buf[offset:offset + 4])
        payload = unmask(mask, bytes(buf[offset + 4:end]))
        del buf[:end]
        return bool(first & 0x80), opcode, payload

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> Message | None:
        if opcode >= OP_CLOSE:
            return Message(opcode, payload)
        if opcode == OP_CONTINUATION:
            if not self._fragments:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation without a first frame")
        elif self._fragments:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        else:
            self._fragment_opcode = opcode
        if opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY):
            raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        self._fragment_size += len(payload)
        if self._fragment_size > self.max_message:
            raise FrameError(CLOSE_TOO_BIG, f"message larger than {self.max_message} bytes")
        self._fragments.append(payload)
        if not fin:
            return None
        message = Message(self._fragment_opcode, b"".join(self._fragments))
        self._fragments.clear()
        self._fragment_size = 0
        return message
