"""/ws: resume without gap or double, resync, snapshot then live, filters, ops, misuse,
slow clients, and resuming on another replica."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from common import events
from common.keys import EVENT_FIELD, Keys
from controller import appkeys
from tests.conftest import RunningController
from tests.support import processes
from tests.support.processes import ADMIN_TOKEN
from tests.support.waiting import wait_until
from tests.support.wsclient import WsRecorder

KEYS = Keys()
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def publish(client: aioredis.Redis, count: int, *, interval: float = 0.0,
                  node: str = "pi-1", size: int = 0, resources: int = 7) -> list[str]:
    ids = []
    for n in range(count):
        event = events.gpio_state_changed(f"res-{n % resources}", node, n % 28,
                                          "high" if n % 2 else "low")
        if size:
            event.data["padding"] = "x" * size
        raw_id = await client.xadd(KEYS.events, {EVENT_FIELD: events.encode(event)})
        ids.append(raw_id.decode())
        if interval:
            await asyncio.sleep(interval)
    return ids


def event_ids(ws: WsRecorder) -> list[str]:
    return [m["id"] for m in ws.messages if "id" in m and not m["type"].startswith("ws.")]


def as_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def stream_ids(client: aioredis.Redis) -> list[str]:
    return [raw_id.decode() for raw_id, _ in await client.xrange(KEYS.events)]


async def test_resume_under_concurrent_publishing_misses_nothing_and_doubles_nothing(
        controller: RunningController, http: aiohttp.ClientSession,
        rds: aioredis.Redis) -> None:
    first_ids = await publish(rds, 5)
    publisher = asyncio.create_task(publish(rds, 600, interval=0.002))
    received: list[str] = []
    resume_from = first_ids[-1]
    try:
        # Three sessions: ?since=, the Last-Event-ID header, and the subscribe op.
        for way in ("query", "header", "op"):
            url, headers = controller.ws_url, {}
            if way == "query":
                url += f"?since={resume_from}"
            elif way == "header":
                headers["Last-Event-ID"] = resume_from
            async with WsRecorder(http, url, headers) as ws:
                if way == "op":
                    await ws.send({"op": "subscribe", "ref": 7, "since": resume_from})
                    await ws.wait_for(lambda m: m.get("type") == "ws.ack" and m["ref"] == 7)
                need = 150
                await ws.wait_for(lambda m, n=need: len(event_ids(ws)) >= n,
                                  what="a share of the events")
                ids = event_ids(ws)
                if way == "op":
                    # Live events before the op arrived are not part of the resumed feed.
                    ack_index = next(i for i, m in enumerate(ws.messages)
                                     if m.get("type") == "ws.ack")
                    ids = [m["id"] for m in ws.messages[ack_index + 1:]
                           if "id" in m and not m["type"].startswith("ws.")]
            received += ids
            resume_from = received[-1]
        await publisher
        async with WsRecorder(http, f"{controller.ws_url}?since={resume_from}") as ws:
            expected_total = len(await stream_ids(rds)) - len(first_ids)
            await ws.wait_for(lambda m: len(event_ids(ws)) + len(received) >= expected_total,
                              what="the rest")
            received += event_ids(ws)
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
    truth = (await stream_ids(rds))[len(first_ids):]
    assert received == truth
    assert [as_key(i) for i in received] == sorted(as_key(i) for i in set(received))


async def test_since_older_than_retention_gives_resync(
        controller: RunningController, http: aiohttp.ClientSession,
        rds: aioredis.Redis) -> None:
    ids = await publish(rds, 50)
    await rds.xtrim(KEYS.events, maxlen=10, approximate=False)
    async with WsRecorder(http, f"{controller.ws_url}?since={ids[5]}") as ws:
        resync = await ws.wait_for(lambda m: True, what="first message")
        assert resync["type"] == "ws.resync"
        await publish(rds, 1)
        await ws.wait_for(lambda m: m.get("type") == "gpio.state.changed", what="live event")
    # Trimmed to nothing: a since before the end still means events were lost.
    await rds.xtrim(KEYS.events, maxlen=0, approximate=False)
    async with WsRecorder(http, f"{controller.ws_url}?since={ids[20]}") as ws:
        first = await ws.wait_for(lambda m: True, what="first message")
        assert first["type"] == "ws.resync"
    ids = await publish(rds, 50)
    # A since inside the kept range replays exactly what follows it.
    async with WsRecorder(http, f"{controller.ws_url}?since={ids[45]}") as ws:
        await ws.wait_for(lambda m: len(event_ids(ws)) >= 4, what="replay")
        assert event_ids(ws) == ids[46:50]
        assert not ws.of_type("ws.resync")


async def test_snapshot_then_live_is_one_consistent_cut(
        controller: RunningController, http: aiohttp.ClientSession,
        rds: aioredis.Redis) -> None:
    store = controller.app[appkeys.STORE]  # type: ignore[index]
    statuses = ["ready", "offline"]

    for n in range(5):  # each node starts where its first flap is not
        await rds.sadd(KEYS.nodes, f"pi-{n}")
        await rds.hset(KEYS.node(f"pi-{n}"), "status", statuses[(n + 1) % 2])

    async def flap(count: int) -> None:
        for n in range(count):
            assert await store.nodes.transition(f"pi-{n % 5}", statuses[n % 2], "flap")
            await asyncio.sleep(0.001)

    await flap(10)
    flapping = asyncio.create_task(flap(400))
    try:
        await asyncio.sleep(0.05)
        async with WsRecorder(http, f"{controller.ws_url}?snapshot=1&types=node.*") as ws:
            end = await ws.wait_for(lambda m: m["type"] == "ws.snapshot.end", what="marker")
            await flapping
            final_id = (await stream_ids(rds))[-1]
            await ws.wait_for(lambda m: m.get("id") == final_id, what="the last event")
    finally:
        flapping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flapping
    state = {m["node_id"]: m["data"]["status"] for m in ws.of_type("node.snapshot")}
    assert end["count"] == len(state) == 5
    live = [m for m in ws.messages if m["type"] == "node.status.changed"]
    early = [m["id"] for m in live if as_key(m["id"]) <= as_key(end["id"])]
    assert live and not early, (end, early[:5], [m.get("type") for m in ws.messages[:8]])
    for message in live:
        state[message["data"]["node_id"]] = message["data"]["status"]
    truth = {n: (await rds.hget(KEYS.node(n), "status")).decode() for n in state}
    assert state == truth
    # Replaying the stream after the marker gives exactly the live events: no gap.
    after = [raw.decode() for raw, _ in await rds.xrange(KEYS.events, min=f"({end['id']}")]
    assert [m["id"] for m in live] == after


async def test_filters_and_the_subscribe_op(controller: RunningController,
                                            http: aiohttp.ClientSession,
                                            rds: aioredis.Redis) -> None:
    url = f"{controller.ws_url}?types=gpio.*&node=pi-2"
    async with WsRecorder(http, url) as ws:
        await publish(rds, 3, node="pi-1")
        await publish(rds, 2, node="pi-2")
        await rds.xadd(KEYS.events, {EVENT_FIELD: events.encode(
            events.node_status_changed("pi-2", "ready"))})
        await ws.wait_for(lambda m: len(ws.messages) >= 2)
        await ws.send({"op": "ping", "ref": 1})
        await ws.wait_for(lambda m: m["type"] == "ws.pong" and m["ref"] == 1)
        assert [m["node_id"] for m in ws.messages if m["type"] == "gpio.state.changed"] == [
            "pi-2", "pi-2"]
        await ws.send({"op": "subscribe", "ref": 2, "types": ["node.status.changed"]})
        ack = await ws.wait_for(lambda m: m["type"] == "ws.ack")
        assert ack["ref"] == 2 and ack["subscription"]["types"] == ["node.status.changed"]
        await ws.send({"op": "subscribe", "ref": 3, "types": "gpio.nothing"})
        error = await ws.wait_for(lambda m: m["type"] == "ws.error")
        assert error["ref"] == 3 and error["code"] == "invalid_subscription"
        assert "gpio.nothing" in error["message"]
        await publish(rds, 2, node="pi-3")
        await rds.xadd(KEYS.events, {EVENT_FIELD: events.encode(
            events.node_status_changed("pi-9", "offline"))})
        late = await ws.wait_for(lambda m: m.get("node_id") == "pi-9")
        assert late["type"] == "node.status.changed"
        assert not [m for m in ws.messages if m.get("node_id") == "pi-3"]


@pytest.mark.parametrize(("message", "code"), [
    ("not json", "bad_message"),
    ('{"op": "dance", "ref": 4}', "unknown_op"),
    ('{"op": "subscribe", "ref": 5, "since": "yesterday"}', "bad_since"),
    ('{"ref": 6}', "bad_message"),
])
async def test_misuse_gets_ws_error_and_the_connection_lives_on(
        controller: RunningController, http: aiohttp.ClientSession, message: str,
        code: str) -> None:
    async with WsRecorder(http, controller.ws_url) as ws:
        assert ws.ws is not None
        await ws.ws.send_str(message)
        error = await ws.wait_for(lambda m: m["type"] == "ws.error")
        assert error["code"] == code and error["message"]
        await ws.send({"op": "ping", "ref": 9})
        await ws.wait_for(lambda m: m["type"] == "ws.pong")


@pytest.mark.parametrize(("query", "reason"), [
    ("types=nope.nope", "types"),
    ("since=abc", "since"),
    ("snapshot=maybe", "snapshot"),
    ("colour=blue", "colour"),
])
async def test_bad_query_closes_with_4400_and_a_reason(
        controller: RunningController, http: aiohttp.ClientSession, query: str,
        reason: str) -> None:
    async with http.ws_connect(f"{controller.ws_url}?{query}") as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4400
        assert reason in msg.extra


async def test_oversized_client_message_closes_with_1009(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(controller.ws_url) as ws:
        await ws.send_str('{"op":"ping","pad":"' + "x" * 100_000 + '"}')
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009


async def test_auth_and_origin_on_upgrade(controller: RunningController) -> None:
    # unsafe=True: the test server is addressed by IP, which the default jar refuses.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await anonymous.ws_connect(controller.ws_url)
        assert info.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await anonymous.ws_connect(controller.ws_url,
                                       headers={"Authorization": "Bearer wrong"})
        assert info.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await anonymous.ws_connect(controller.ws_url, headers={
                **AUTH, "Origin": "http://evil.example"})
        assert info.value.status == 403
        # A browser logs in once and /ws rides on the HttpOnly session cookie.
        async with anonymous.post(f"{controller.url}/api/v1/login",
                                  json={"token": ADMIN_TOKEN}) as response:
            assert response.status == 200
            assert "httponly" in response.headers["Set-Cookie"].lower()
        host = controller.url.removeprefix("http://")
        async with anonymous.ws_connect(controller.ws_url,
                                        headers={"Origin": f"http://{host}"}) as ws:
            await ws.send_json({"op": "ping", "ref": 1})
            reply = await ws.receive_json(timeout=5)
            assert reply == {"type": "ws.pong", "ref": 1}


async def stuck_client(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Completes the upgrade, then never reads again."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
                  ).encode())
    await writer.drain()
    status = await reader.readline()
    assert b"101" in status
    return reader, writer


async def test_a_client_that_stops_reading_is_closed_and_the_others_keep_up(
        controller: RunningController, http: aiohttp.ClientSession,
        rds: aioredis.Redis) -> None:
    hub = controller.app[appkeys.HUB]  # type: ignore[index]
    _, writer = await stuck_client(controller.ws_url)
    try:
        async with WsRecorder(http, controller.ws_url) as ws:
            # 2,000 resources, 20 KB each: coalescing cannot shrink that below the hard
            # limit plus what the sockets hold, so the stuck client must be cut off.
            sent = await publish(rds, 2000, size=20_000, resources=2000)
            await ws.wait_for(lambda m: len(event_ids(ws)) >= len(sent), timeout=60,
                              what="every event at the reading client")
            assert event_ids(ws) == sent
            assert hub.kicked >= 1
    finally:
        writer.close()


async def test_resume_on_another_replica(private_redis: object, tmp_path: Path) -> None:
    url = private_redis.url  # type: ignore[attr-defined]
    first = processes.controller(url, tmp_path / "a.log").start()
    second = processes.controller(url, tmp_path / "b.log").start()
    client = aioredis.Redis.from_url(url)
    try:
        await processes.wait_ready(first.url, first)  # type: ignore[attr-defined]
        await processes.wait_ready(second.url, second)  # type: ignore[attr-defined]
        async with aiohttp.ClientSession(headers=AUTH) as http:
            ws_a = f"{first.url.replace('http', 'ws')}/ws"  # type: ignore[attr-defined]
            ws_b = f"{second.url.replace('http', 'ws')}/ws"  # type: ignore[attr-defined]
            async with WsRecorder(http, ws_a) as ws:
                await publish(client, 20)
                await ws.wait_for(lambda m: len(event_ids(ws)) >= 20)
                seen = event_ids(ws)[:20]
            await publish(client, 30)
            async with WsRecorder(http, f"{ws_b}?since={seen[-1]}") as ws:
                await ws.wait_for(lambda m: len(event_ids(ws)) >= 30)
                assert seen + event_ids(ws) == await stream_ids(client)
    finally:
        await client.aclose()
        first.stop()
        second.stop()


async def test_events_history_endpoint(controller: RunningController,
                                       http: aiohttp.ClientSession,
                                       rds: aioredis.Redis) -> None:
    ids = await publish(rds, 30)
    async with http.get(f"{controller.url}/api/v1/events",
                        params={"limit": "5"}) as response:
        body = await response.json()
    assert [e["id"] for e in body["items"]] == ids[-5:]
    async with http.get(f"{controller.url}/api/v1/events",
                        params={"since": ids[9], "limit": "3"}) as response:
        body = await response.json()
    assert [e["id"] for e in body["items"]] == ids[10:13]
    async with http.get(f"{controller.url}/api/v1/events",
                        params={"types": "node.*"}) as response:
        assert (await response.json())["items"] == []
    async with http.get(f"{controller.url}/api/v1/events",
                        params={"limit": "0"}) as response:
        assert response.status == 422
        assert (await response.json())["field"] == "limit"
    started = time.monotonic()
    async with http.get(f"{controller.url}/api/v1/events",
                        params={"since": "zzz"}) as response:
        assert response.status == 422
        assert (await response.json())["field"] == "since"
    assert time.monotonic() - started < 30


async def test_heartbeat_drops_a_peer_that_never_answers_and_keeps_one_that_does(
        redis_url: str) -> None:
    from aiohttp import web

    from controller.app import create_app
    from controller.settings import ControllerSettings
    from tests.support.redis_server import free_port

    port = free_port()
    app = create_app(ControllerSettings(redis_url=redis_url, port=port,
                                        admin_token=ADMIN_TOKEN, ws_heartbeat=0.2))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await app[appkeys.BOOTSTRAPPED].wait()
        hub = app[appkeys.HUB]
        reader, writer = await stuck_client(f"ws://127.0.0.1:{port}/ws")
        async with aiohttp.ClientSession(headers=AUTH) as http, WsRecorder(
                http, f"ws://127.0.0.1:{port}/ws") as ws:  # reads, so it answers pings
            # The silent one never answers: within a few intervals it is dropped.
            received = await asyncio.wait_for(reader.read(), 10)  # ends at the abort
            after_handshake = received.split(b"\r\n\r\n", 1)[1]
            assert after_handshake.startswith(b"\x89\x00")  # it was pinged first
            await wait_until(lambda: len(hub) == 1, 5, what="only the live client left")
            await asyncio.sleep(1.0)  # five more intervals: the answering client stays
            assert len(hub) == 1
            await ws.send({"op": "ping", "ref": 1})
            await ws.wait_for(lambda m: m.get("type") == "ws.pong")
            assert ws.close_code is None
        writer.close()
    finally:
        await runner.cleanup()


async def test_plain_http_and_protocol_breakers(controller: RunningController,
                                                http: aiohttp.ClientSession) -> None:
    async with http.get(f"{controller.url}/ws") as response:
        assert response.status == 400
        assert "WebSocket" in (await response.json())["message"]
    reader, writer = await stuck_client(controller.ws_url)
    try:
        writer.write(b"\x81\x02hi")  # an unmasked client frame: forbidden by RFC 6455
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        close = data.split(b"\r\n\r\n", 1)[1]
        assert close[:1] == b"\x88" and int.from_bytes(close[2:4], "big") == 1002
    finally:
        writer.close()
