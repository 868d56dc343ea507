"""RFC 6455 framing for the server side of /ws: frames we send, and an incremental parser for
what clients send (masked, possibly fragmented, control frames in between, any chop of the
byte stream).

The parser checks everything section 5 asks of a server: reserved bits and opcodes, masking,
control frame size and fragmentation, continuation order, UTF-8 of text messages (section 8.1:
checked as the bytes arrive, so an invalid sequence fails at once, not when the message
ends), and close frame bodies (section 7.4). Clients send little (ops, pongs, close), so
clarity beats speed here; the hot path, server to client, is frames built once in ``hub``.
"""

from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass
from typing import Final

from controller.ws.codes import CloseCode, received_code_valid

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
KNOWN_OPCODES: Final = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING,
                                  OP_PONG})

MAX_CONTROL_PAYLOAD: Final = 125
MAX_CLOSE_REASON: Final = MAX_CONTROL_PAYLOAD - 2

_Utf8Decoder: Final = codecs.getincrementaldecoder("utf-8")


class FrameError(Exception):
    """The peer broke the protocol; close with ``code``."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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


def cut_reason(reason: str) -> bytes:
    """``reason`` as UTF-8 in at most 123 bytes, cut on a character boundary."""
    encoded = reason.encode()
    if len(encoded) <= MAX_CLOSE_REASON:
        return encoded
    return encoded[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode()


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame; ``code`` None gives an empty body (the echo of a close without one)."""
    if code is None:
        return frame(OP_CLOSE)
    return frame(OP_CLOSE, struct.pack("!H", code) + cut_reason(reason))


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """The code and reason of a client's close frame (RFC 6455 sections 5.5.1, 7.4)."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "close frame body of 1 byte")
    code = int.from_bytes(payload[:2], "big")
    if not received_code_valid(code):
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


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
class _Frame:
    """The frame being read: its header, and how much of its payload has arrived."""

    fin: bool
    opcode: int
    size: int
    mask: bytes
    received: int = 0


class FrameParser:
    """Feed bytes in, get whole messages out; control frames come out as they arrive."""

    __slots__ = ("_buffer", "_fragments", "_frame", "_message_opcode", "_message_size",
                 "_utf8", "failure", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._frame: _Frame | None = None
        self._fragments: list[bytes] = []
        self._message_opcode = 0
        """Opcode of the data message being assembled; 0 when none is open."""
        self._message_size = 0
        self._utf8: codecs.IncrementalDecoder | None = None
        self.failure: FrameError | None = None
        """How the peer broke the protocol: set once, after which nothing more is parsed."""

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by ``data``, in order. If the peer broke the protocol,
        those before the break, and ``failure`` says what broke."""
        out: list[Message] = []
        if self.failure is not None:
            return out
        self._buffer += data
        try:
            self._parse(out)
        except FrameError as err:
            self.failure = err
            self._buffer.clear()
        return out

    def _parse(self, out: list[Message]) -> None:
        buf = self._buffer
        while True:
            current = self._frame or self._read_header()
            if current is None:
                return
            self._frame = current
            if current.opcode >= OP_CLOSE:  # at most 125 bytes: wait for all of it
                if len(buf) < current.size:
                    return
                payload = unmask(current.mask, bytes(buf[:current.size]))
                del buf[:current.size]
                self._frame = None
                out.append(Message(current.opcode, payload))
                continue
            self._take_data(current)
            if current.received < current.size:
                return
            self._frame = None
            message = self._end_data_frame(current)
            if message is not None:
                out.append(message)

    def _read_header(self) -> _Frame | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin, opcode = bool(first & 0x80), first & 0x0F
        if first & 0x70:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
        if opcode not in KNOWN_OPCODES:
            raise FrameError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if not second & 0x80:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        size, offset = second & 0x7F, 2
        if opcode >= OP_CLOSE:
            if not fin:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if size > MAX_CONTROL_PAYLOAD:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")
        elif opcode == OP_CONTINUATION:
            if not self._message_opcode:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "continuation without a first frame")
        elif self._message_opcode:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        if size == 126:
            if len(buf) < 4:
                return None
            size, offset = struct.unpack_from("!H", buf, 2)[0], 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, offset = struct.unpack_from("!Q", buf, 2)[0], 10
            if size >> 63:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "payload length has its top bit set")
        if opcode < OP_CLOSE and self._message_size + size > self.max_message:
            raise FrameError(CloseCode.TOO_BIG, f"message larger than {self.max_message} bytes")
        if len(buf) < offset + 4:
            return None
        mask = bytes(buf[offset:offset + 4])
        del buf[:offset + 4]
        if opcode in (OP_TEXT, OP_BINARY):
            self._message_opcode = opcode
            self._utf8 = _Utf8Decoder() if opcode == OP_TEXT else None
        return _Frame(fin, opcode, size, mask)

    def _take_data(self, current: _Frame) -> None:
        """Move what has arrived of a data frame's payload out of the buffer, checking text
        as it comes."""
        buf = self._buffer
        wanted = current.size - current.received
        if not wanted or not buf:
            return
        chunk = bytes(buf[:wanted])
        del buf[:len(chunk)]
        shift = current.received % 4
        chunk = unmask(current.mask[shift:] + current.mask[:shift], chunk)
        current.received += len(chunk)
        self._check_text(chunk, final=False)
        self._fragments.append(chunk)

    def _check_text(self, chunk: bytes, *, final: bool) -> None:
        if self._utf8 is None:
            return
        try:
            self._utf8.decode(chunk, final)
        except UnicodeDecodeError:
            raise FrameError(CloseCode.INVALID_DATA, "text message is not valid UTF-8") from None

    def _end_data_frame(self, current: _Frame) -> Message | None:
        self._message_size += current.size
        if not current.fin:
            return None
        self._check_text(b"", final=True)
        message = Message(self._message_opcode, b"".join(self._fragments))
        self._fragments.clear()
        self._message_opcode = 0
        self._message_size = 0
        self._utf8 = None
        return message
