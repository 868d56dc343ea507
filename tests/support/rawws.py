"""A raw-socket WebSocket client for tests (RFC 6455), on asyncio streams, with no WebSocket
library: it sends exactly the bytes a test asks for, malformed ones included, and reports
exactly what the server sent back, down to how the TCP connection ended (FIN or reset).

    response = await handshake(controller.ws_url, headers={"Authorization": ...})
    async with response.ws as ws:
        await ws.send_frame(OP_TEXT, b'{"op":"ping","ref":1}')
        reply = await ws.read_message(5)
        closing = await ws.read_until_close(5)

Every read takes a timeout and fails with a message that lists what was received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

from multidict import CIMultiDict

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

RSV1: Final = 0b100
"""``rsv`` bits as send_frame takes them: RSV1 is the frame's 0x40 bit, RSV3 its 0x10."""
RSV2: Final = 0b010
RSV3: Final = 0b001

OPCODE_NAMES: Final = {OP_CONTINUATION: "continuation", OP_TEXT: "text", OP_BINARY: "binary",
                       OP_CLOSE: "close", OP_PING: "ping", OP_PONG: "pong"}


class ConnectionEnded(Exception):
    """The server's side of the stream ended (FIN or reset) before what was being read."""


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``client_key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(client_key.encode() + GUID).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def mask_bytes(key: bytes, data: bytes) -> bytes:
    size = len(data)
    if not size:
        return data
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        size, "little")


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                 masked: bool = True) -> bytes:
    """One frame as a client sends it: masked with a fresh key unless ``masked`` is false;
    the 7-bit, 16-bit or 64-bit length, whichever the payload needs."""
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv & 0b111) << 4 | (opcode & 0x0F)])
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
    return head + key + mask_bytes(key, payload)


def fragment_frames(opcode: int, parts: Sequence[bytes], *, masked: bool = True) -> list[bytes]:
    """A message in ``parts``: the first frame has ``opcode``, the rest are continuations,
    the last has FIN set."""
    assert parts, "a message has at least one frame"
    last = len(parts) - 1
    return [client_frame(opcode if i == 0 else OP_CONTINUATION, part, fin=i == last,
                         masked=masked) for i, part in enumerate(parts)]


def chop(data: bytes, size: int) -> list[bytes]:
    """``data`` in pieces of ``size`` bytes (the last may be shorter); b"" gives [b""]."""
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    """A close frame's payload: nothing, or the 2-byte code then the reason."""
    if code is None:
        assert not reason, "a reason needs a code"
        return b""
    raw = reason.encode() if isinstance(reason, str) else reason
    return struct.pack("!H", code) + raw


def _short(data: bytes, limit: int = 160) -> str:
    text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} bytes)"


class Frame(NamedTuple):
    """A frame the server sent (or a whole message, from read_message)."""

    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def json(self) -> Any:
        return json.loads(self.payload)

    def describe(self) -> str:
        name = OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode:#x}")
        flags = ("" if self.fin else " fin=0") + (f" rsv={self.rsv:03b}" if self.rsv else "")
        if self.opcode == OP_CLOSE and len(self.payload) >= 2:
            body = f"{self.close_code} {_short(self.payload[2:])}"
        elif self.opcode == OP_TEXT:
            text = self.payload.decode(errors="replace")
            body = text if len(text) <= 200 else f"{text[:200]}... ({len(self.payload)} bytes)"
        else:
            body = _short(self.payload)
        return f"{name}{flags} {body}"


class Closing(NamedTuple):
    """What read_until_close saw: every frame up to and including the close frame."""

    frames: list[Frame]
    code: int | None
    reason: str
    """The reason as text (undecodable bytes replaced); raw_reason has the bytes."""
    raw_reason: bytes


def messages_of(frames: Sequence[Frame]) -> list[Frame]:
    """Frames as messages: fragments joined (into the first frame's opcode and rsv), control
    frames as they came."""
    out: list[Frame] = []
    started: Frame | None = None
    parts: list[bytes] = []
    for frame in frames:
        if frame.opcode >= OP_CLOSE:
            out.append(frame)
        elif started is None:
            if frame.fin:
                out.append(frame)
            else:
                started, parts = frame, [frame.payload]
        else:
            parts.append(frame.payload)
            if frame.fin:
                out.append(Frame(True, started.rsv, started.opcode, b"".join(parts)))
                started, parts = None, []
    return out


class _Reader(asyncio.StreamReader):
    """A StreamReader that keeps what arrived before a reset readable (a plain one raises
    the reset at once, losing a close frame already received) and remembers how the stream
    ended: ``"FIN"`` (EOF) or the error that ended it."""

    ended_by: str | None = None

    def feed_eof(self) -> None:
        if self.ended_by is None:
            self.ended_by = "FIN"
        super().feed_eof()

    def set_exception(self, exc: BaseException) -> None:
        if self.ended_by is None:
            self.ended_by = type(exc).__name__
        super().feed_eof()


class RawWs:
    """The client's end of an upgraded connection."""

    def __init__(self, reader: _Reader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.received: list[Frame] = []
        """Every frame read so far, in order."""
        self.trailing = b""
        """Bytes that came after the last frame read, as closed_cleanly found them."""

    async def __aenter__(self) -> RawWs:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    @property
    def ended_by(self) -> str | None:
        """None while the server's side is open; else "FIN" or the error (ConnectionResetError)."""
        return self._reader.ended_by

    # --- sending -------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def write_nowait(self, data: bytes) -> None:
        """Queue ``data`` without waiting for the server to take it (a flood)."""
        self._writer.write(data)

    async def drain(self) -> None:
        """Until the server has taken what was queued."""
        await self._writer.drain()

    def unsent(self) -> int:
        """Bytes queued here that the kernel has not taken yet."""
        return self._writer.transport.get_write_buffer_size()

    async def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True,
                         rsv: int = 0, masked: bool = True) -> None:
        await self.send_raw(client_frame(opcode, payload, fin=fin, rsv=rsv, masked=masked))

    async def send_fragments(self, opcode: int, parts: Sequence[bytes], *,
                             one_write: bool = True) -> None:
        """One message in ``parts`` (see fragment_frames): in one write, or one write each."""
        frames = fragment_frames(opcode, parts)
        if one_write:
            await self.send_raw(b"".join(frames))
            return
        for data in frames:
            await self.send_raw(data)

    async def send_chopped(self, data: bytes, size: int = 1) -> None:
        """``data`` (frames) in writes of ``size`` bytes each."""
        for piece in chop(data, size):
            await self.send_raw(piece)

    async def send_close(self, code: int | None = None, reason: bytes | str = b"") -> None:
        await self.send_frame(OP_CLOSE, close_payload(code, reason))

    # --- receiving -----------------------------------------------------------------------

    def describe(self) -> str:
        """What the client received so far, and whether the server's side has ended."""
        frames = "\n  ".join(f.describe() for f in self.received) or "(nothing)"
        ended = f"ended by {self.ended_by}" if self.ended_by else "open"
        trailing = f"\n  then {_short(self.trailing)}" if self.trailing else ""
        return f"received:\n  {frames}{trailing}\nserver side: {ended}"

    async def _read(self, size: int, what: str) -> bytes:
        try:
            return await self._reader.readexactly(size)
        except asyncio.IncompleteReadError as err:
            raise ConnectionEnded(f"connection ended by {self.ended_by} in {what} "
                                  f"({len(err.partial)} of {size} bytes); "
                                  f"{self.describe()}") from None

    async def read_bytes(self, size: int, timeout: float = 5.0) -> bytes:
        """Exactly ``size`` raw bytes of what the server sent (frames unparsed)."""
        async with asyncio.timeout(timeout):
            return await self._read(size, "raw bytes")

    async def _frame(self) -> Frame:
        first, second = await self._read(2, "a frame header")
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self._read(2, "a 16-bit length"))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self._read(8, "a 64-bit length"))[0]
        if second & 0x80:
            raise AssertionError(f"the server masked a frame (RFC 6455 5.1 forbids it): "
                                 f"{bytes([first, second])!r}; {self.describe()}")
        payload = await self._read(size, f"a {size}-byte payload") if size else b""
        frame = Frame(bool(first & 0x80), (first >> 4) & 0b111, first & 0x0F, payload)
        self.received.append(frame)
        return frame

    async def read_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame the server sent: (fin, rsv, opcode, payload).

        On timeout a frame may be half read: the connection is not to be read again."""
        try:
            async with asyncio.timeout(timeout):
                return await self._frame()
        except TimeoutError:
            raise TimeoutError(f"no frame within {timeout} s; {self.describe()}") from None

    async def read_message(self, timeout: float = 5.0) -> Frame:
        """The next control frame, or the next data message with its fragments joined."""
        try:
            async with asyncio.timeout(timeout):
                frame = await self._frame()
                parts: list[bytes] = []
                started = frame
                while frame.opcode < OP_CLOSE and not frame.fin:
                    parts.append(frame.payload)
                    frame = await self._frame()
                    if frame.opcode >= OP_CLOSE:
                        raise AssertionError(f"a control frame inside a server message is "
                                             f"legal but not expected here; {self.describe()}")
                if parts:
                    parts.append(frame.payload)
                    return Frame(True, started.rsv, started.opcode, b"".join(parts))
                return frame
        except TimeoutError:
            raise TimeoutError(f"no message within {timeout} s; {self.describe()}") from None

    async def read_until_close(self, timeout: float = 5.0) -> Closing:
        """Every frame up to and including the server's close frame, with its code (None for
        an empty payload) and reason. Fails if the connection ends or ``timeout`` passes
        first."""
        frames: list[Frame] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self._frame()
                    frames.append(frame)
                    if frame.opcode == OP_CLOSE:
                        break
        except TimeoutError:
            raise TimeoutError(f"no close frame within {timeout} s; {self.describe()}"
                               ) from None
        except ConnectionEnded as err:
            raise ConnectionEnded(f"no close frame before the end: {err}") from None
        raw_reason = frame.payload[2:]
        return Closing(frames, frame.close_code, raw_reason.decode(errors="replace"),
                       raw_reason)

    async def closed_cleanly(self, timeout: float = 5.0) -> bool:
        """Reads to the end of the stream (what remains goes to ``trailing``): True if the
        server closed with a FIN, False if the connection was reset."""
        try:
            async with asyncio.timeout(timeout):
                self.trailing += await self._reader.read()
        except TimeoutError:
            raise TimeoutError(f"the server did not close the TCP connection within "
                               f"{timeout} s; {self.describe()}") from None
        return self.ended_by == "FIN"

    async def close(self) -> None:
        """Drop the connection from this side (no close frame: send_close sends one)."""
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(1):
                await self._writer.wait_closed()


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


@dataclass
class Response:
    """The server's answer to a handshake, and the connection it came on (``ws``: usable as
    a WebSocket after a 101)."""

    version: str
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes
    key: str | None
    """The Sec-WebSocket-Key sent (None if the request had none)."""
    request: bytes
    ws: RawWs

    async def __aenter__(self) -> RawWs:
        return self.ws

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.ws.close()

    def tokens(self, name: str) -> set[str]:
        """A comma-separated header's tokens, lower case, over all its lines."""
        return set().union(*(_tokens(v) for v in self.headers.getall(name, [])))

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        request = "".join(f"\n  {line}" for line in
                          self.request.decode(errors="replace").strip().split("\r\n"))
        headers = "".join(f"\n  {name}: {value}" for name, value in self.headers.items())
        return (f"request:{request}\nresponse: {self.version} {self.status} {self.reason}"
                f"{headers}\n  body: {_short(self.body, 300)}")


def _target(url_or_host_port: str | tuple[str, int], path: str | None) -> tuple[str, int, str]:
    if isinstance(url_or_host_port, tuple):
        host, port = url_or_host_port
        return host, port, path or "/"
    parts = urlsplit(url_or_host_port)
    assert parts.hostname, url_or_host_port
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    target = path or (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, target


async def _body(reader: _Reader, method: str, status: int, headers: CIMultiDict[str]) -> bytes:
    if method == "HEAD" or status < 200 or status in (204, 304):
        return b""
    if "chunked" in _tokens(headers.get("Transfer-Encoding", "")):
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields
                    pass
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    if "Content-Length" in headers:
        return await reader.readexactly(int(headers["Content-Length"]))
    return await reader.read()


async def handshake(url_or_host_port: str | tuple[str, int], *, path: str | None = None,
                    headers: Mapping[str, str | None] | None = None,
                    extra_lines: Sequence[str] = (), method: str = "GET",
                    version: str = "HTTP/1.1", tail: bytes = b"",
                    timeout: float = 5.0, rcvbuf: int | None = None) -> Response:
    """Send an opening handshake and read the answer: status line, headers and (for anything
    but a 101) the body.

    ``url_or_host_port``: ``ws://host:port/path?query`` (or http://), or ``(host, port)``
    with ``path``. The request carries Host, ``Upgrade: websocket``, ``Connection:
    Upgrade``, a fresh ``Sec-WebSocket-Key`` and ``Sec-WebSocket-Version: 13``; ``headers``
    replaces any of these by name (case-insensitive; None drops it) or adds more;
    ``extra_lines`` are raw header lines added as given. ``tail`` goes in the same write,
    right behind the request (frames, say). ``rcvbuf`` shrinks the client's receive buffer
    (set before connecting), so a client that does not read backs the server up quickly."""
    host, port, target = _target(url_or_host_port, path)
    lines: dict[str, tuple[str, str]] = {}  # lower-case name -> (name, value), in order
    for name, value in (("Host", f"{host}:{port}"), ("Upgrade", "websocket"),
                        ("Connection", "Upgrade"), ("Sec-WebSocket-Key", new_key()),
                        ("Sec-WebSocket-Version", "13")):
        lines[name.lower()] = (name, value)
    for name, override in (headers or {}).items():
        if override is None:
            lines.pop(name.lower(), None)
        else:
            lines[name.lower()] = (name, override)
    key = lines["sec-websocket-key"][1] if "sec-websocket-key" in lines else None
    request = "".join([f"{method} {target} {version}\r\n",
                       *(f"{name}: {value}\r\n" for name, value in lines.values()),
                       *(f"{line}\r\n" for line in extra_lines), "\r\n"]).encode()

    loop = asyncio.get_running_loop()
    reader = _Reader(limit=1 << 20)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    transport, protocol = await loop.create_connection(
        lambda: asyncio.StreamReaderProtocol(reader), sock=sock)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    ws = RawWs(reader, writer)
    try:
        await ws.send_raw(request + tail)
        async with asyncio.timeout(timeout):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as err:
                raise ConnectionEnded(f"connection ended by {reader.ended_by} before the "
                                      f"response head; got {err.partial!r}") from None
            status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            response_version, status, reason = [*status_line.split(" ", 2), ""][:3]
            parsed: CIMultiDict[str] = CIMultiDict()
            for line in header_lines:
                name, _, value = line.partition(":")
                parsed.add(name.strip(), value.strip())
            code = int(status)
            body = b"" if code == 101 else await _body(reader, method, code, parsed)
    except TimeoutError:
        await ws.close()
        raise TimeoutError(f"no complete response within {timeout} s to:\n"
                           f"{request.decode(errors='replace')}") from None
    except BaseException:
        await ws.close()
        raise
    return Response(response_version, code, reason, parsed, body, key, request, ws)
