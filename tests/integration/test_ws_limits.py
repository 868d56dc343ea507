"""/ws stays bounded whatever a client sends, and a socket lives only as long as its access:
rate limits, per-token caps, snapshot refusal, floods that never read, revocation and
logout, and resume positions Redis cannot take. Each test reads what the client receives:
the messages, the close code and reason, and how the TCP connection ended."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import redis.asyncio as aioredis

from common import events
from common.keys import EVENT_FIELD, Keys
from controller import appkeys
from controller.auth import digest
from tests.conftest import RunningController, running_controller
from tests.support.processes import ADMIN_TOKEN
from tests.support.rawws import OP_CLOSE, OP_PING, OP_TEXT, RawWs, client_frame, handshake
from tests.support.wsclient import WsRecorder

KEYS = Keys()
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def op(message: dict[str, object]) -> bytes:
    return client_frame(OP_TEXT, json.dumps(message).encode())


async def connect(url: str, token: str = ADMIN_TOKEN, rcvbuf: int | None = None) -> RawWs:
    response = await handshake(url, headers={"Authorization": f"Bearer {token}"},
                               rcvbuf=rcvbuf)
    assert response.status == 101, response.describe()
    return response.ws


async def new_token(http: aiohttp.ClientSession, url: str, name: str,
                    role: str = "viewer") -> str:
    async with http.post(f"{url}/api/v1/tokens", json={"name": name, "role": role}) as reply:
        assert reply.status == 201, await reply.text()
        token: str = (await reply.json())["token"]
        return token


# --- since ----------------------------------------------------------------------------------

@pytest.mark.parametrize("since", ["1-99999999999999999999999", "18446744073709551616-0"])
async def test_a_since_redis_cannot_take_is_refused_on_connect_and_in_subscribe(
        controller: RunningController, since: str) -> None:
    ws = await connect(f"{controller.ws_url}?since={since}")
    closing = await ws.read_until_close(5)
    assert closing.code == 4400, closing
    assert closing.reason.startswith("since:"), closing
    assert await ws.closed_cleanly(5)

    ws = await connect(controller.ws_url)
    await ws.send_raw(op({"op": "subscribe", "ref": 9, "since": since}))
    reply = (await ws.read_message(5)).json
    assert reply["type"] == "ws.error" and reply["ref"] == 9, reply
    assert reply["code"] == "bad_since"
    await ws.send_raw(op({"op": "ping", "ref": 10}))
    assert (await ws.read_message(5)).json == {"type": "ws.pong", "ref": 10}
    await ws.close()


async def test_a_since_beyond_the_newest_event_gets_resync_then_live_events(
        controller: RunningController, http: aiohttp.ClientSession,
        rds: aioredis.Redis) -> None:
    future = "18446744073709551615-18446744073709551615"  # the largest id Redis takes
    async with WsRecorder(http, f"{controller.ws_url}?since={future}") as ws:
        resync = await ws.wait_for(lambda m: m["type"] == "ws.resync", 5, "ws.resync")
        assert resync["since"] == future
        raw_id = await rds.xadd(KEYS.events, {EVENT_FIELD: events.encode(
            events.node_status_changed("pi-7", "ready"))})
        live = await ws.wait_for(lambda m: m.get("id") == raw_id.decode(), 5, "a live event")
        assert live["node_id"] == "pi-7"
        assert ws.messages.index(resync) < ws.messages.index(live)


# --- access ---------------------------------------------------------------------------------

async def test_revoking_a_token_closes_its_sockets_within_a_second(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    token = await new_token(http, controller.url, "wall-display")
    other = await connect(controller.ws_url)  # the admin's socket stays
    ws = await connect(controller.ws_url, token)
    await ws.send_raw(op({"op": "ping", "ref": 1}))
    assert (await ws.read_message(5)).json["type"] == "ws.pong"
    async with http.delete(f"{controller.url}/api/v1/tokens/wall-display") as reply:
        assert reply.status == 204
    revoked = time.monotonic()
    closing = await ws.read_until_close(5)
    assert time.monotonic() - revoked < 1.0
    assert closing.code == 4401, closing
    assert "revoked" in closing.reason and token not in closing.reason
    await other.send_raw(op({"op": "ping", "ref": 2}))
    assert (await other.read_message(5)).json == {"type": "ws.pong", "ref": 2}
    await other.close()


async def test_a_token_deleted_elsewhere_closes_its_sockets_within_a_second(
        controller: RunningController, http: aiohttp.ClientSession,
        rds: aioredis.Redis) -> None:
    """As when another replica revokes it: nothing reaches this replica but Redis."""
    token = await new_token(http, controller.url, "kiosk")
    ws = await connect(controller.ws_url, token)
    assert await rds.hdel(KEYS.tokens, digest(token)) == 1
    deleted = time.monotonic()
    closing = await ws.read_until_close(5)
    assert time.monotonic() - deleted < 1.0
    assert closing.code == 4401, closing


async def test_logging_out_closes_the_sessions_sockets(
        controller: RunningController) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(f"{controller.url}/api/v1/login",
                                json={"token": ADMIN_TOKEN}) as reply:
            assert reply.status == 200
        async with WsRecorder(browser, controller.ws_url) as ws:
            await ws.send({"op": "ping", "ref": 1})
            await ws.wait_for(lambda m: m["type"] == "ws.pong", 5)
            async with browser.post(f"{controller.url}/api/v1/logout",
                                    headers={"Origin": controller.url}) as reply:
                assert reply.status == 204
            logged_out = time.monotonic()
            await asyncio.wait_for(ws.closed.wait(), 5)
            assert time.monotonic() - logged_out < 1.0
            assert ws.close_code == 4401
            assert ws.close_reason is not None and "session" in ws.close_reason


async def test_connections_per_token_are_capped(redis_url: str) -> None:
    async with running_controller(redis_url, ws_max_per_token=2) as controller:
        first = await connect(controller.ws_url)
        second = await connect(controller.ws_url)
        third = await connect(controller.ws_url)
        closing = await third.read_until_close(5)
        assert closing.code == 4429, closing
        assert "PIC_WS_MAX_PER_TOKEN" in closing.reason
        await first.send_close(1000)
        await first.read_until_close(5)
        assert await first.closed_cleanly(5)
        # The freed place can be taken (once the server has seen the socket go).
        deadline = time.monotonic() + 5
        while True:
            fourth = await connect(controller.ws_url)
            await fourth.send_raw(op({"op": "ping", "ref": 4}))
            reply = await fourth.read_frame(5)
            if reply.opcode != OP_CLOSE or time.monotonic() > deadline:
                break
            await fourth.close()
        assert json.loads(reply.payload) == {"type": "ws.pong", "ref": 4}
        await second.close()
        await fourth.close()


# --- floods ---------------------------------------------------------------------------------

async def test_ops_past_the_rate_get_one_error_then_a_close(redis_url: str) -> None:
    async with running_controller(redis_url, ws_max_rate=20.0) as controller:
        ws = await connect(controller.ws_url)
        # The burst is five seconds' worth (100); 150 at once: 100 answered, then one
        # rate_limited error, the rest dropped, and the connection stays.
        await ws.send_raw(b"".join(op({"op": "ping", "ref": n}) for n in range(150)))
        await ws.send_raw(op({"op": "ping", "ref": "late"}))
        received = []
        while not any(m["type"] == "ws.error" for m in received):
            received.append((await ws.read_message(5)).json)
        pongs = [m["ref"] for m in received if m["type"] == "ws.pong"]
        errors = [m for m in received if m["type"] == "ws.error"]
        # The allowance refills at 20 a second while the 150 are read: a few more may pass.
        assert pongs == list(range(len(pongs))) and 100 <= len(pongs) <= 105, pongs[-3:]
        assert [e["code"] for e in errors] == ["rate_limited"]
        # Going on regardless: closed once the deficit is a burst deep.
        await ws.send_raw(b"".join(op({"op": "ping", "ref": n}) for n in range(60)))
        closing = await ws.read_until_close(5)
        assert not [m for m in closing.frames if m.opcode == OP_TEXT
                    and json.loads(m.payload).get("type") == "ws.pong"]
        assert closing.code == 4429, closing
        assert "messages a second" in closing.reason
        assert await ws.closed_cleanly(5)


async def test_a_client_flooding_pings_and_snapshots_without_reading_is_closed(
        controller: RunningController) -> None:
    ws = await connect(controller.ws_url, rcvbuf=4096)  # it reads nothing for a while
    flood = b"".join(client_frame(OP_PING, b"p" * 125) + op(
        {"op": "subscribe", "ref": n, "snapshot": True}) for n in range(2000))
    started = time.monotonic()
    ws.write_nowait(flood)  # about 300 KB: far more than the server reads before closing
    closing = await ws.read_until_close(5)
    assert time.monotonic() - started < 5.0
    assert closing.code == 4429, closing
    pongs = [f for f in closing.frames if f.opcode == 0xA]
    assert len(pongs) <= 100  # the burst, not the flood


async def test_a_snapshot_is_refused_while_the_previous_one_is_queued(
        redis_url: str, rds: aioredis.Redis) -> None:
    nodes = 120  # 6 MB of snapshot: more than the kernel takes for a client (tcp_wmem, 4 MB)
    for n in range(nodes):
        await rds.sadd(KEYS.nodes, f"pi-{n}")
        await rds.hset(KEYS.node(f"pi-{n}"), mapping={"status": "ready",
                                                        "hostname": f"h{n}" + "x" * 50_000})
    async with running_controller(redis_url, ws_hard_buffer=32 << 20) as controller:
        ws = await connect(controller.ws_url, rcvbuf=4096)
        await ws.send_raw(op({"op": "subscribe", "ref": 1, "types": "node.*",
                              "snapshot": True})
                          + op({"op": "subscribe", "ref": 2, "types": "node.*",
                                "snapshot": True}))
        received = []
        while not any(m.get("ref") == 2 for m in received):
            received.append((await ws.read_message(10)).json)
        kinds = [m["type"] for m in received]
        assert kinds.count("node.snapshot") == nodes and kinds.count("ws.snapshot.end") == 1
        refusal = received[-1]
        assert refusal["type"] == "ws.error" and refusal["code"] == "busy", refusal
        # Once read, another snapshot is served.
        await ws.send_raw(op({"op": "subscribe", "ref": 3, "types": "node.*",
                              "snapshot": True}))
        received = []
        while not received or received[-1]["type"] != "ws.snapshot.end":
            received.append((await ws.read_message(10)).json)
        assert received[0]["type"] == "ws.ack" and received[0]["ref"] == 3
        assert received[-1]["count"] == nodes
        await ws.close()


async def test_reading_pauses_while_the_client_does_not_read(redis_url: str) -> None:
    """No rate limit here: only back-pressure keeps the server's memory flat."""
    soft = 64 * 1024
    async with running_controller(redis_url, ws_max_rate=1e9, ws_soft_buffer=soft) as controller:
        ws = await connect(controller.ws_url, rcvbuf=4096)
        count = 400_000  # 52 MB of pings: more than all the kernel buffers in between
        ws.write_nowait(client_frame(OP_PING, b"p" * 125) * count)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                await ws.drain()  # the server stops taking them
        assert ws.unsent() > 0
        [client] = controller.app[appkeys.HUB].clients()
        # Held back: past the soft limit, at most the replies to one read (256 KiB) more.
        assert client.transport.get_write_buffer_size() <= soft + 256 * 1024
        # Once the client reads, the server reads again: every ping gets its pong.
        pong = b"\x8a\x7d" + b"p" * 125
        assert await ws.read_bytes(len(pong) * count, 60) == pong * count
        await ws.drain()
        await ws.close()
