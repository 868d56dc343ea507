"""/ws against RFC 6455, byte for byte, from a raw socket (tests/support/rawws.py).

The cases follow the families of the Autobahn|Testsuite, on /ws's own terms (it answers JSON
ops, it does not echo): the opening handshake (RFC 6455 4.2.1, 4.2.2: the 101 answer, token
matching of Upgrade and Connection, 400/426/405 refusals, bytes sent right behind the
request), 1 framing (every length encoding, up to PIC_WS_MAX_MESSAGE and one past it, byte by
byte writes, binary, unmasked frames), 2 pings and pongs, 3 reserved bits, 4 reserved opcodes,
5 fragmentation, 6 UTF-8 validation (fail fast, sequences split across fragments), 7 the
closing handshake (code and reason validation, echo, what follows a close, server-initiated
closes ending in FIN rather than reset, reason length) and 9 limits.

Each case opens its own connection and checks what the client receives: status line and
headers, frames with their opcodes and payloads, the close code and reason, how TCP ended.
Every read has a timeout, and a failure prints everything received. A case sends well under
80 frames, below the per-connection rate limit (20 a second, bursts of 100).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import pytest

from tests.conftest import RunningController
from tests.support.processes import ADMIN_TOKEN
from tests.support.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OPCODE_NAMES,
    RSV1,
    RSV2,
    RSV3,
    Closing,
    Frame,
    RawWs,
    Response,
    accept_key,
    chop,
    client_frame,
    close_payload,
    fragment_frames,
    handshake,
    messages_of,
)

TIMEOUT: Final = 5.0
MAX_MESSAGE: Final = 65536
"""PIC_WS_MAX_MESSAGE's default."""
AUTH: Final = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

Summary = tuple[Any, ...]


class NonEmptyText:
    """Equal to any non-empty string (a ws.error's ``message``)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<non-empty text>"


def ping_op(ref: object, size: int | None = None) -> bytes:
    """``{"op":"ping","ref":ref}`` as UTF-8, padded with spaces to ``size`` bytes."""
    text = json.dumps({"op": "ping", "ref": ref}, separators=(",", ":"),
                      ensure_ascii=False).encode()
    if size is None:
        return text
    assert size >= len(text), (size, text)
    return text[:-1] + b" " * (size - len(text)) + b"}"


def op_frame(ref: object, size: int | None = None) -> bytes:
    return client_frame(OP_TEXT, ping_op(ref, size))


def ws_pong(ref: object) -> Summary:
    return ("text", {"type": "ws.pong", "ref": ref})


BAD_MESSAGE: Final = ("text", {"type": "ws.error", "ref": None, "code": "bad_message",
                               "message": NonEmptyText()})


def summary(frame: Frame) -> Summary:
    """A message as a comparable tuple: ("text", parsed JSON), ("close", code, reason), or
    (opcode name, payload)."""
    name = OPCODE_NAMES.get(frame.opcode, f"opcode {frame.opcode:#x}")
    if frame.opcode == OP_TEXT:
        try:
            return (name, json.loads(frame.payload))
        except ValueError:
            return (name, frame.payload.decode(errors="replace"))
    if frame.opcode == OP_CLOSE:
        return (name, frame.close_code, frame.payload[2:].decode(errors="replace"))
    return (name, frame.payload)


def is_event(frame: Frame) -> bool:
    """A fleet event (not a reply to anything the test sent); skipped, but still listed in
    failure messages."""
    if frame.opcode != OP_TEXT:
        return False
    try:
        message = json.loads(frame.payload)
    except ValueError:
        return False
    kind = message.get("type") if isinstance(message, dict) else None
    return isinstance(kind, str) and not kind.startswith("ws.")


def replies(frames: Sequence[Frame]) -> list[Summary]:
    return [summary(m) for m in messages_of(frames) if not is_event(m)]


async def reply(ws: RawWs) -> Summary:
    """The next message that is not a fleet event."""
    while True:
        message = await ws.read_message(TIMEOUT)
        if not is_event(message):
            assert message.rsv == 0, f"no extension was agreed; {ws.describe()}"
            return summary(message)


async def expect_replies(ws: RawWs, *expected: Summary) -> None:
    got = [await reply(ws) for _ in expected]
    assert got == list(expected), ws.describe()


def check_close_frame(ws: RawWs, closing: Closing) -> None:
    close = closing.frames[-1]
    assert close.fin and close.rsv == 0, f"a close frame is final, no RSV; {ws.describe()}"
    assert len(close.payload) != 1, f"a close payload is empty or 2+ bytes; {ws.describe()}"
    assert len(closing.raw_reason) <= 123, ws.describe()
    try:
        closing.raw_reason.decode()
    except UnicodeDecodeError:
        raise AssertionError(f"close reason is not UTF-8; {ws.describe()}") from None


async def expect_close(ws: RawWs, code: int | None,
                       before: Sequence[Summary] = ()) -> Closing:
    """The server's close frame with ``code``, after exactly the replies ``before``."""
    closing = await ws.read_until_close(TIMEOUT)
    got = (replies(closing.frames[:-1]), closing.code)
    assert got == (list(before), code), ws.describe()
    check_close_frame(ws, closing)
    return closing


async def send_despite_close(ws: RawWs, data: bytes) -> None:
    """Send what the server may close on before taking it all in."""
    with contextlib.suppress(ConnectionError):
        await ws.send_raw(data)


async def connect(controller: RunningController, query: str = "", *, tail: bytes = b"",
                  headers: Mapping[str, str | None] | None = None,
                  extra_lines: Sequence[str] = ()) -> Response:
    response = await handshake(controller.ws_url + query, headers={**AUTH, **(headers or {})},
                               extra_lines=extra_lines, tail=tail, timeout=TIMEOUT)
    if response.status != 101:
        await response.ws.close()
        raise AssertionError(f"no upgrade; {response.describe()}")
    return response


@contextlib.asynccontextmanager
async def opened(controller: RunningController, query: str = "", *,
                 tail: bytes = b"") -> AsyncIterator[RawWs]:
    response = await connect(controller, query, tail=tail)
    async with response as ws:
        yield ws


def key_of(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode()


# --- The opening handshake (RFC 6455 4.2.1, 4.2.2) ------------------------------------------

@pytest.mark.parametrize("extra", [
    {},
    {"Sec-WebSocket-Protocol": "chat", "Sec-WebSocket-Extensions": "permessage-deflate"},
    {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},  # RFC 6455 1.3's example
], ids=["plain", "offers-protocol-and-extension", "rfc-example-key"])
async def test_handshake_101_answer(controller: RunningController,
                                    extra: dict[str, str]) -> None:
    response = await connect(controller, headers=extra)
    async with response as ws:
        status = (response.version, response.status, response.reason)
        assert status == ("HTTP/1.1", 101, "Switching Protocols"), response.describe()
        assert response.tokens("Upgrade") == {"websocket"}, response.describe()
        assert "upgrade" in response.tokens("Connection"), response.describe()
        assert response.key is not None
        accept = accept_key(response.key)
        if response.key == "dGhlIHNhbXBsZSBub25jZQ==":
            assert accept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert response.headers.getall("Sec-WebSocket-Accept", []) == [accept], (
            response.describe())
        assert "Sec-WebSocket-Protocol" not in response.headers, response.describe()
        assert "Sec-WebSocket-Extensions" not in response.headers, response.describe()
        await ws.send_raw(op_frame(1))
        await expect_replies(ws, ws_pong(1))


@pytest.mark.parametrize(("headers", "extra_lines"), [
    ({"Upgrade": "WebSocket"}, ()),
    ({"Upgrade": "foo/1, websocket"}, ()),
    ({"Connection": "keep-alive, Upgrade"}, ()),
    ({"Connection": "upgrade"}, ()),
    ({"Upgrade": "WEBSOCKET", "Connection": "keep-alive,UPGRADE"}, ()),
    ({"Connection": "keep-alive"}, ("Connection: Upgrade",)),  # one list over two lines
], ids=["Upgrade-WebSocket", "Upgrade-list", "Connection-list", "Connection-lower",
        "upper-case-lists", "Connection-two-lines"])
async def test_handshake_header_tokens(controller: RunningController, headers: dict[str, str],
                                       extra_lines: tuple[str, ...]) -> None:
    response = await connect(controller, headers=headers, extra_lines=extra_lines)
    async with response as ws:
        assert response.headers.get("Sec-WebSocket-Accept") == accept_key(
            response.key or ""), response.describe()
        await ws.send_raw(op_frame(2))
        await expect_replies(ws, ws_pong(2))


NO_UPGRADE: Final[dict[str, str | None]] = {
    "Upgrade": None, "Connection": None, "Sec-WebSocket-Key": None,
    "Sec-WebSocket-Version": None}


@pytest.mark.parametrize(("headers", "method", "version", "status"), [
    ({"Upgrade": "not-websocket-thing"}, "GET", "HTTP/1.1", 400),
    ({"Connection": "no-upgrade"}, "GET", "HTTP/1.1", 400),
    ({"Upgrade": None}, "GET", "HTTP/1.1", 400),
    (NO_UPGRADE, "GET", "HTTP/1.1", 400),
    ({"Sec-WebSocket-Key": None}, "GET", "HTTP/1.1", 400),
    ({"Sec-WebSocket-Key": "!!!"}, "GET", "HTTP/1.1", 400),
    ({"Sec-WebSocket-Key": key_of(15)}, "GET", "HTTP/1.1", 400),
    ({"Sec-WebSocket-Key": key_of(17)}, "GET", "HTTP/1.1", 400),
    ({"Sec-WebSocket-Version": "8"}, "GET", "HTTP/1.1", 426),
    ({"Sec-WebSocket-Version": None}, "GET", "HTTP/1.1", 426),
    ({}, "GET", "HTTP/1.0", 400),
    ({}, "HEAD", "HTTP/1.1", 405),
    ({"Content-Length": "0"}, "POST", "HTTP/1.1", 405),
], ids=["Upgrade-not-websocket", "Connection-no-upgrade", "no-Upgrade", "plain-GET", "no-key",
        "key-not-base64", "key-15-bytes", "key-17-bytes", "version-8", "no-version",
        "HTTP-1.0", "HEAD", "POST"])
async def test_handshake_refused(controller: RunningController,
                                 headers: dict[str, str | None], method: str, version: str,
                                 status: int) -> None:
    response = await handshake(controller.ws_url, headers={**AUTH, **headers}, method=method,
                               version=version, timeout=TIMEOUT)
    async with response:
        assert response.status == status, response.describe()
        assert "Sec-WebSocket-Accept" not in response.headers, response.describe()
        if status == 426:
            assert response.headers.getall("Sec-WebSocket-Version", []) == ["13"], (
                response.describe())
        if status == 405:  # RFC 9110 15.5.6: a 405 names the methods that are allowed
            assert "get" in response.tokens("Allow"), response.describe()
        if method == "HEAD":
            assert response.body == b"", response.describe()
            return
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"the body is not JSON; {response.describe()}") from None
        assert isinstance(body, dict), response.describe()
        assert isinstance(body.get("message"), str) and body["message"], response.describe()


async def test_handshake_bytes_right_behind_the_request_are_kept(
        controller: RunningController) -> None:
    tail = op_frame(7) + client_frame(OP_PING, b"hi")
    async with opened(controller, tail=tail) as ws:
        got = [await reply(ws), await reply(ws)]
        assert sorted(got, key=repr) == sorted([("pong", b"hi"), ws_pong(7)], key=repr), (
            ws.describe())


# --- 1 Framing ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [21, 125, 126, 127, 65535, 65536])
async def test_1_framing_text_op_of_length(controller: RunningController, size: int) -> None:
    assert len(ping_op(7)) == 21
    async with opened(controller) as ws:
        await ws.send_raw(op_frame(7, size))
        await expect_replies(ws, ws_pong(7))


async def test_1_framing_empty_text_is_a_bad_message(controller: RunningController) -> None:
    async with opened(controller) as ws:
        await ws.send_raw(client_frame(OP_TEXT, b""))
        await expect_replies(ws, BAD_MESSAGE)
        await ws.send_raw(op_frame(1))
        await expect_replies(ws, ws_pong(1))


async def test_1_framing_text_one_past_the_limit_closes_1009(
        controller: RunningController) -> None:
    async with opened(controller) as ws:
        await send_despite_close(ws, op_frame(1, MAX_MESSAGE + 1))
        await expect_close(ws, 1009)


@pytest.mark.parametrize("chunk", [1, 3])
async def test_1_framing_message_in_small_writes(controller: RunningController,
                                                 chunk: int) -> None:
    async with opened(controller) as ws:
        await ws.send_chopped(op_frame(3, 130), chunk)  # 16-bit length: 8 header bytes
        await expect_replies(ws, ws_pong(3))


@pytest.mark.parametrize("size", [0, 125, 65536])
async def test_1_framing_binary_is_a_bad_message(controller: RunningController,
                                                 size: int) -> None:
    async with opened(controller) as ws:
        await ws.send_raw(client_frame(OP_BINARY, bytes(i % 256 for i in range(size))))
        await expect_replies(ws, BAD_MESSAGE)
        await ws.send_raw(op_frame(4))
        await expect_replies(ws, ws_pong(4))


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE],
                         ids=["text", "binary", "ping", "close"])
async def test_1_framing_unmasked_frame_closes_1002(controller: RunningController,
                                                    opcode: int) -> None:
    payload = {OP_TEXT: ping_op(1), OP_BINARY: b"\x00\xff", OP_PING: b"hi",
               OP_CLOSE: close_payload(1000)}[opcode]
    async with opened(controller) as ws:
        await ws.send_raw(client_frame(opcode, payload, masked=False))
        await expect_close(ws, 1002)


# --- 2 Pings and pongs ------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"", b"Hello, world!", b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff",
    bytes((7 * i + 3) % 256 for i in range(125))],
    ids=["empty", "text", "binary", "125-bytes"])
async def test_2_ping_gets_a_pong_with_its_payload(controller: RunningController,
                                                   payload: bytes) -> None:
    async with opened(controller) as ws:
        await ws.send_raw(client_frame(OP_PING, payload))
        await expect_replies(ws, ("pong", payload))


async def test_2_ping_in_byte_sized_writes(controller: RunningController) -> None:
    async with opened(controller) as ws:
        await ws.send_chopped(client_frame(OP_PING, b"chopped"))
        await expect_replies(ws, ("pong", b"chopped"))


@pytest.mark.parametrize(("data"), [
    client_frame(OP_PING, b"x" * 126),
    client_frame(OP_PING, b"frag", fin=False),
    client_frame(OP_PING, b"fr", fin=False) + client_frame(OP_CONTINUATION, b"ag"),
], ids=["126-bytes", "not-final", "not-final-then-continuation"])
async def test_2_bad_ping_closes_1002(controller: RunningController, data: bytes) -> None:
    async with opened(controller) as ws:
        await send_despite_close(ws, data)
        await expect_close(ws, 1002)


@pytest.mark.parametrize("payload", [b"", b"unsolicited"], ids=["empty", "with-payload"])
async def test_2_unsolicited_pong_is_ignored(controller: RunningController,
                                             payload: bytes) -> None:
    async with opened(controller) as ws:
        await ws.send_raw(client_frame(OP_PONG, payload) + op_frame(5))
        await expect_replies(ws, ws_pong(5))  # nothing before it


@pytest.mark.parametrize("one_write", [True, False], ids=["one-write", "ten-writes"])
async def test_2_ten_pings_get_ten_pongs_in_order(controller: RunningController,
                                                  one_write: bool) -> None:
    payloads = [f"ping {n}".encode() for n in range(10)]
    frames = [client_frame(OP_PING, p) for p in payloads]
    async with opened(controller) as ws:
        if one_write:
            await ws.send_raw(b"".join(frames))
        else:
            for data in frames:
                await ws.send_raw(data)
        await expect_replies(ws, *[("pong", p) for p in payloads])


# --- 3 Reserved bits ------------------------------------------------------------------------

RSV_CASES: Final = {"RSV1": RSV1, "RSV2": RSV2, "RSV3": RSV3, "all": RSV1 | RSV2 | RSV3}
RSV_FRAMES: Final = {"text": (OP_TEXT, ping_op(2)), "binary": (OP_BINARY, b"\x00\xff"),
                     "ping": (OP_PING, b"rsv"), "close": (OP_CLOSE, close_payload(1000))}


@pytest.mark.parametrize("rsv", RSV_CASES.values(), ids=RSV_CASES.keys())
@pytest.mark.parametrize("kind", RSV_FRAMES.keys())
async def test_3_reserved_bits_close_1002(controller: RunningController, kind: str,
                                          rsv: int) -> None:
    opcode, payload = RSV_FRAMES[kind]
    # A valid op before the bad frame is answered first; nothing after it is.
    data = (op_frame(1) + client_frame(opcode, payload, rsv=rsv)
            + client_frame(OP_PING, b"after") + op_frame(3))
    async with opened(controller) as ws:
        await send_despite_close(ws, data)
        await expect_close(ws, 1002, before=[ws_pong(1)])


# --- 4 Opcodes ------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"reserved"], ids=["empty", "with-payload"])
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF],
                         ids=lambda o: f"{o:#x}")
async def test_4_reserved_opcode_closes_1002(controller: RunningController, opcode: int,
                                             payload: bytes) -> None:
    data = (op_frame(1) + client_frame(opcode, payload) + client_frame(OP_PING, b"after")
            + op_frame(3))
    async with opened(controller) as ws:
        await send_despite_close(ws, data)
        await expect_close(ws, 1002, before=[ws_pong(1)])


# --- 5 Fragmentation ------------------------------------------------------------------------

OP_21: Final = ping_op(21)


@pytest.mark.parametrize(("parts", "one_write"), [
    ([OP_21[:10], OP_21[10:]], True),
    ([OP_21[:10], OP_21[10:]], False),
    (chop(OP_21, 1), True),
    (chop(OP_21, 1), False),
    ([b"", OP_21, b""], True),
], ids=["2-fragments", "2-writes", "1-byte-fragments", "1-byte-fragments-1-write-each",
        "empty-first-and-last"])
async def test_5_fragmented_op_is_answered(controller: RunningController, parts: list[bytes],
                                           one_write: bool) -> None:
    async with opened(controller) as ws:
        await ws.send_fragments(OP_TEXT, parts, one_write=one_write)
        await expect_replies(ws, ws_pong(21))


async def test_5_empty_fragments_make_an_empty_message(controller: RunningController) -> None:
    async with opened(controller) as ws:
        await ws.send_fragments(OP_TEXT, [b"", b"", b""])
        await expect_replies(ws, BAD_MESSAGE)


async def test_5_pings_between_fragments_in_one_write(controller: RunningController) -> None:
    first, middle, last = fragment_frames(OP_TEXT, [OP_21[:7], OP_21[7:14], OP_21[14:]])
    async with opened(controller) as ws:
        await ws.send_raw(first + client_frame(OP_PING, b"p1") + middle
                          + client_frame(OP_PING, b"p2") + last)
        await expect_replies(ws, ("pong", b"p1"), ("pong", b"p2"), ws_pong(21))


async def test_5_pings_between_fragments_answered_at_once(
        controller: RunningController) -> None:
    first, middle, last = fragment_frames(OP_TEXT, [OP_21[:7], OP_21[7:14], OP_21[14:]])
    async with opened(controller) as ws:
        await ws.send_raw(first + client_frame(OP_PING, b"p1"))
        await expect_replies(ws, ("pong", b"p1"))  # with the message still open
        await ws.send_raw(middle + client_frame(OP_PING, b"p2"))
        await expect_replies(ws, ("pong", b"p2"))
        await ws.send_raw(last)
        await expect_replies(ws, ws_pong(21))


@pytest.mark.parametrize(("data", "before"), [
    (client_frame(OP_CONTINUATION, OP_21), []),
    (client_frame(OP_CONTINUATION, OP_21[:10], fin=False)
     + client_frame(OP_CONTINUATION, OP_21[10:]), []),
    (op_frame(1) + client_frame(OP_CONTINUATION, OP_21), [ws_pong(1)]),
    (client_frame(OP_TEXT, OP_21[:10], fin=False) + op_frame(2), []),
    (client_frame(OP_TEXT, OP_21[:10], fin=False) + client_frame(OP_BINARY, b"\x00"), []),
    (client_frame(OP_BINARY, b"\x00", fin=False) + op_frame(2), []),
], ids=["continuation-alone", "continuation-first", "continuation-after-a-whole-message",
        "text-inside-text", "binary-inside-text", "text-inside-binary"])
async def test_5_continuation_out_of_place_closes_1002(controller: RunningController,
                                                       data: bytes,
                                                       before: list[Summary]) -> None:
    async with opened(controller) as ws:
        await send_despite_close(ws, data + client_frame(OP_PING, b"after"))
        await expect_close(ws, 1002, before=before)


async def test_5_fragments_over_the_limit_close_1009(controller: RunningController) -> None:
    payload = ping_op(5, 80_000)
    async with opened(controller) as ws:
        await send_despite_close(ws, b"".join(fragment_frames(
            OP_TEXT, [payload[:40_000], payload[40_000:]])))
        await expect_close(ws, 1009)


# --- 6 UTF-8 --------------------------------------------------------------------------------

VALID_TEXT: Final = {
    "greek": "κόσμε",
    "2-byte-bounds": "\u0080\u07ff",
    "3-byte-bounds": "\u0800\ud7ff\ue000\ufffd",
    "4-byte-bounds": "\U00010000\U0010ffff",
    "noncharacters": "\ufffe\uffff\U0010fffe",
    "bom": "\ufeffx",
}


@pytest.mark.parametrize("text", VALID_TEXT.values(), ids=VALID_TEXT.keys())
async def test_6_valid_utf8_is_answered(controller: RunningController, text: str) -> None:
    async with opened(controller) as ws:
        await ws.send_raw(op_frame(text))
        await expect_replies(ws, ws_pong(text))


@pytest.mark.parametrize("split", ["inside-a-character", "every-byte", "4-byte-in-3"])
async def test_6_character_split_across_fragments(controller: RunningController,
                                                  split: str) -> None:
    ref = "κ𝄞κόσμε"
    data = ping_op(ref)
    if split == "inside-a-character":
        cut = data.index(b"\xce") + 1  # ends fragment 1 with CE, the start of κ
        parts = [data[:cut], data[cut:]]
    elif split == "every-byte":
        parts = chop(data, 1)
    else:
        at = data.index("𝄞".encode())  # F0 9D 84 9E: one byte, two bytes, one byte
        parts = [data[:at + 1], data[at + 1:at + 3], data[at + 3:]]
    async with opened(controller) as ws:
        await ws.send_fragments(OP_TEXT, parts)
        await expect_replies(ws, ws_pong(ref))


INVALID_UTF8: Final = {
    "surrogate-in-text":
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
    "low-surrogate": b"\xed\xbf\xbf",
    "overlong-2-byte": b"\xc0\xaf",
    "overlong-3-byte": b"\xe0\x80\xaf",
    "overlong-4-byte": b"\xf0\x80\x80\xaf",
    "5-byte": b"\xf8\x88\x80\x80\x80",
    "6-byte": b"\xfc\x84\x80\x80\x80\x80",
    "ff": b"\xff",
    "fe": b"\xfe",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "lone-continuation": b"\x80",
    "truncated-2-byte-at-end": "κόσμε".encode() + b"\xce",
    "truncated-3-byte-at-end": b"ab\xe1\xbd",
}


def in_json(sequence: bytes) -> bytes:
    return b'{"op":"ping","ref":"' + sequence + b'"}'


@pytest.mark.parametrize("where", ["whole-message", "in-a-json-string"])
@pytest.mark.parametrize("sequence", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_6_invalid_utf8_closes_1007(controller: RunningController, sequence: bytes,
                                          where: str) -> None:
    payload = sequence if where == "whole-message" else in_json(sequence)
    async with opened(controller) as ws:
        await send_despite_close(ws, client_frame(OP_TEXT, payload) + op_frame(3))
        await expect_close(ws, 1007)  # and nothing for the op behind it


async def test_6_invalid_utf8_in_byte_fragments_closes_1007(
        controller: RunningController) -> None:
    async with opened(controller) as ws:
        await send_despite_close(ws, b"".join(fragment_frames(
            OP_TEXT, chop(INVALID_UTF8["surrogate-in-text"], 1))))
        await expect_close(ws, 1007)


@pytest.mark.parametrize("sequence", [b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                      b"\xff"], ids=["overlong", "surrogate", "above-10ffff",
                                                     "ff"])
async def test_6_fail_fast_on_the_first_fragment(controller: RunningController,
                                                 sequence: bytes) -> None:
    async with opened(controller) as ws:
        # The rest of the message is never sent: the close must come without it.
        await send_despite_close(ws, client_frame(
            OP_TEXT, b'{"op":"ping","ref":"ab' + sequence + b"cd", fin=False))
        await expect_close(ws, 1007)


@pytest.mark.parametrize(("first", "second"), [
    (b'{"op":"ping","ref":"\xce', b'A"}'),
    (b'{"op":"ping","ref":"\xf0\x9d', b'\x84A"}'),
    (b'{"op":"ping","ref":"\xe1', b'\xbd\xc0"}'),
], ids=["2-byte-then-ascii", "4-byte-then-ascii", "3-byte-then-lead"])
async def test_6_invalid_utf8_across_fragments_closes_1007(controller: RunningController,
                                                           first: bytes,
                                                           second: bytes) -> None:
    async with opened(controller) as ws:
        await send_despite_close(ws, b"".join(fragment_frames(OP_TEXT, [first, second])))
        await expect_close(ws, 1007)


# --- 7 Close handling -----------------------------------------------------------------------

async def test_7_empty_close_is_answered_empty_then_fin(controller: RunningController) -> None:
    async with opened(controller) as ws:
        await ws.send_close()
        closing = await expect_close(ws, None)
        assert closing.frames[-1].payload == b"", ws.describe()
        assert await ws.closed_cleanly(TIMEOUT), ws.describe()
        assert ws.trailing == b"", ws.describe()


ECHOED_CODES: Final = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                       3000, 3999, 4000, 4999]


@pytest.mark.parametrize(("code", "reason"), [
    *((code, b"") for code in ECHOED_CODES),
    (1000, b"x" * 123),
    (1000, "κόσμε bye".encode()),
], ids=[*map(str, ECHOED_CODES), "1000-123-byte-reason", "1000-utf8-reason"])
async def test_7_close_code_is_echoed_then_fin(controller: RunningController, code: int,
                                               reason: bytes) -> None:
    async with opened(controller) as ws:
        await ws.send_close(code, reason)
        await expect_close(ws, code)
        assert await ws.closed_cleanly(TIMEOUT), ws.describe()
        assert ws.trailing == b"", ws.describe()


INVALID_CLOSE: Final = {
    "1-byte": (b"\x03", 1002),
    **{str(code): (close_payload(code), 1002)
       for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)},
    "reason-surrogate": (close_payload(1000, INVALID_UTF8["surrogate-in-text"]), 1007),
    "reason-ff": (close_payload(1000, b"bye \xff"), 1007),
    "126-bytes": (close_payload(1000, b"x" * 124), 1002),
}


@pytest.mark.parametrize(("payload", "code"), INVALID_CLOSE.values(), ids=INVALID_CLOSE.keys())
async def test_7_invalid_close_is_refused(controller: RunningController, payload: bytes,
                                          code: int) -> None:
    async with opened(controller) as ws:
        await send_despite_close(ws, client_frame(OP_CLOSE, payload))
        await expect_close(ws, code)


async def test_7_message_then_close_in_one_write(controller: RunningController) -> None:
    async with opened(controller) as ws:
        await ws.send_raw(op_frame(1) + client_frame(OP_CLOSE, close_payload(1000)))
        await expect_close(ws, 1000, before=[ws_pong(1)])


@pytest.mark.parametrize(("before", "after"), [
    (b"", op_frame(2) + client_frame(OP_PING, b"after")),
    (client_frame(OP_TEXT, OP_21[:10], fin=False), client_frame(OP_CONTINUATION, OP_21[10:])),
], ids=["op-and-ping", "rest-of-a-fragmented-message"])
async def test_7_nothing_after_the_clients_close_is_answered(controller: RunningController,
                                                             before: bytes,
                                                             after: bytes) -> None:
    async with opened(controller) as ws:
        await ws.send_raw(before + client_frame(OP_CLOSE, close_payload(1000)) + after)
        await expect_close(ws, 1000)
        assert await ws.closed_cleanly(TIMEOUT), ws.describe()
        assert ws.trailing == b"", ws.describe()


@pytest.mark.parametrize("pings", ["none", "behind-the-request", "before-reading"])
async def test_7_server_close_4400_ends_with_fin(controller: RunningController,
                                                 pings: str) -> None:
    ops = [op_frame(n) for n in range(1, 6)]
    response = await connect(controller, "?types=nope.nope",
                             tail=b"".join(ops) if pings == "behind-the-request" else b"")
    async with response as ws:
        if pings == "before-reading":
            for data in ops:
                await send_despite_close(ws, data)
        closing = await ws.read_until_close(TIMEOUT)
        assert closing.code == 4400 and "types" in closing.reason, ws.describe()
        check_close_frame(ws, closing)
        await send_despite_close(ws, client_frame(OP_CLOSE, close_payload(4400)))
        assert await ws.closed_cleanly(TIMEOUT), ws.describe()
        assert ws.trailing == b"", f"data after the close frame; {ws.describe()}"


async def test_7_server_close_reason_is_cut_to_123_bytes_of_utf8(
        controller: RunningController) -> None:
    async with opened(controller, "?types=" + "%C3%A9" * 200) as ws:
        closing = await ws.read_until_close(TIMEOUT)
        assert closing.code == 4400, ws.describe()
        assert len(closing.raw_reason) <= 123, ws.describe()
        assert closing.raw_reason.decode() == closing.reason, ws.describe()
        check_close_frame(ws, closing)


# --- 9 Limits -------------------------------------------------------------------------------

@pytest.mark.parametrize("fragment", [MAX_MESSAGE, 4096, 1024], ids=["1-frame", "16-fragments",
                                                                     "64-fragments"])
async def test_9_largest_message_is_answered(controller: RunningController,
                                             fragment: int) -> None:
    async with opened(controller) as ws:
        await ws.send_fragments(OP_TEXT, chop(ping_op("big", MAX_MESSAGE), fragment))
        await expect_replies(ws, ws_pong("big"))


@pytest.mark.parametrize("fragment", [MAX_MESSAGE + 1, MAX_MESSAGE], ids=["1-frame",
                                                                        "2-fragments"])
async def test_9_one_byte_over_closes_1009(controller: RunningController,
                                           fragment: int) -> None:
    async with opened(controller) as ws:
        await send_despite_close(ws, b"".join(fragment_frames(
            OP_TEXT, chop(ping_op("big", MAX_MESSAGE + 1), fragment))))
        await expect_close(ws, 1009)


async def test_9_fragmented_200k_closes_1009_as_soon_as_the_limit_is_passed(
        controller: RunningController) -> None:
    """200 KB in 2 KB fragments: the close comes with the 33rd fragment, before the rest."""
    fragments = chop(ping_op("huge", 200 * 1024), 2048)
    async with opened(controller) as ws:
        # 32 fragments make exactly the limit: still open, as the pong shows.
        await ws.send_raw(b"".join(client_frame(OP_TEXT if n == 0 else OP_CONTINUATION,
                                                part, fin=False)
                                   for n, part in enumerate(fragments[:32]))
                          + client_frame(OP_PING, b"at the limit"))
        await expect_replies(ws, ("pong", b"at the limit"))
        await send_despite_close(ws, client_frame(OP_CONTINUATION, fragments[32], fin=False))
        await expect_close(ws, 1009)
