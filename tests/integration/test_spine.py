"""The event spine end to end, with every part a real process: Redis, controller, agents."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path

import aiohttp
import msgspec
import redis.asyncio as aioredis

from common import events
from common.keys import EVENT_FIELD, Keys
from tests.support import processes
from tests.support.processes import ADMIN_TOKEN
from tests.support.redis_server import RedisServer
from tests.support.streams import stream_events
from tests.support.waiting import wait_until
from tests.support.wsclient import WsRecorder

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def pin(name: str, node: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
            "metadata": {"name": name}, "spec": {"nodeName": node, **spec}}



async def test_agent_to_redis_to_controller_to_ws(private_redis: RedisServer,
                                                  tmp_path: Path) -> None:
    ctl = processes.controller(private_redis.url, tmp_path / "controller.log").start()
    agent_a = processes.agent(private_redis.url, "pi-a", tmp_path / "a.log").start()
    agent_b = processes.agent(private_redis.url, "pi-b", tmp_path / "b.log",
                              extra=["--gpio", "sim", "--sim-input-interval", "0.1"]).start()
    try:
        await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]
        async with aiohttp.ClientSession(headers=AUTH) as http:
            api = f"{ctl.url}/api/v1"  # type: ignore[attr-defined]

            async def both_ready() -> bool:
                async with http.get(f"{api}/nodes") as response:
                    body = await response.json()
                return {n["id"] for n in body["items"] if n["status"] == "ready"} >= {
                    "pi-a", "pi-b"}

            await wait_until(both_ready, 20, what="both agents ready")
            ws_url = f"{ctl.url.replace('http', 'ws')}/ws"  # type: ignore[attr-defined]
            async with WsRecorder(http, ws_url) as ws:
                # Create a pin and flip it: the agent confirms with gpio.state.changed.
                async with http.post(f"{api}/gpio", json=pin(
                        "led-1", "pi-a", pin=18, mode="output", state="low")) as response:
                    assert response.status == 201, await response.text()
                async with http.patch(f"{api}/gpio/led-1",
                                      json={"spec": {"state": "high"}}) as response:
                    assert response.status == 200
                    request_id = response.headers["X-Request-ID"]
                confirmed = await ws.wait_for(
                    lambda m: m["type"] == "gpio.state.changed"
                    and m["data"]["state"] == "high", what="pin confirmed high")
                assert confirmed["resource"] == "led-1"
                assert confirmed["data"]["pin"] == 18
                assert confirmed["data"]["node_id"] == "pi-a"
                assert confirmed["data"]["request_id"] == request_id
                assert confirmed["data"]["actor"] == "admin"
                assert set(confirmed) >= {"id", "type", "timestamp", "data"}

                # SIGTERM: the agent reports itself offline before it exits.
                agent_a.signal(signal.SIGTERM)
                assert agent_a.wait(15) == 0
                offline = await ws.wait_for(
                    lambda m: m["type"] == "node.status.changed"
                    and m["data"]["node_id"] == "pi-a" and m["data"]["status"] == "offline",
                    what="pi-a offline")
                assert offline["data"]["previous_status"] == "ready"

                # Redis goes away while pi-b's input keeps changing; nothing is lost.
                async with http.post(f"{api}/gpio", json=pin(
                        "button-1", "pi-b", pin=27, mode="input")) as response:
                    assert response.status == 201
                await ws.wait_for(lambda m: m["type"] == "gpio.state.changed"
                                  and m["resource"] == "button-1", what="first input edge")
                private_redis.kill()
                outage_start = events.now_iso()
                await asyncio.sleep(3)  # the outage itself: the agent keeps producing
                outage_end = events.now_iso()
                private_redis.start()

                async def caught_up() -> bool:
                    stream = [e for e in await stream_events(private_redis.url)
                              if e.resource == "button-1" and e.type == "gpio.state.changed"]
                    seen = [m for m in ws.messages if m.get("resource") == "button-1"
                            and m["type"] == "gpio.state.changed"]
                    during = [e for e in stream if outage_start < e.timestamp < outage_end]
                    return len(during) >= 5 and [m["id"] for m in seen] == [
                        e.id for e in stream]

                await wait_until(caught_up, 20, what="ws to catch up with the stream")
                edges = [m for m in ws.messages if m.get("resource") == "button-1"
                         and m["type"] == "gpio.state.changed"]
                # Every edge of a toggling input: levels strictly alternate, so a lost event
                # would show as two equal states in a row.
                states = [m["data"]["state"] for m in edges]
                assert all(a != b for a, b in itertools.pairwise(states)), states
                ids = [tuple(map(int, m["id"].split("-"))) for m in edges]
                assert ids == sorted(ids) and len(set(ids)) == len(ids)
                stamps = [m["timestamp"] for m in edges]
                assert stamps == sorted(stamps)
    finally:
        for proc in (agent_a, agent_b, ctl):
            proc.stop()
    assert "Traceback" not in ctl.log()  # type: ignore[attr-defined]


async def test_undecodable_entries_are_dead_lettered_and_the_feed_goes_on(
        controller: object, redis_url: str, http: aiohttp.ClientSession) -> None:
    client = aioredis.Redis.from_url(redis_url)
    keys = Keys()
    try:
        async with WsRecorder(http, controller.ws_url) as ws:  # type: ignore[attr-defined]
            await client.xadd(keys.events, {EVENT_FIELD: b"\xc1garbage"})
            await client.xadd(keys.events, {b"other": b"x"})
            await client.xadd(keys.events, {EVENT_FIELD: msgspec.msgpack.encode(
                {"type": "gpio.state.changed", "timestamp": "t", "data": {}})})
            good = events.system_log_created("info", "after the garbage")
            await client.xadd(keys.events, {EVENT_FIELD: events.encode(good)})
            message = await ws.wait_for(lambda m: m["type"] == "system.log.created")
            assert message["data"]["message"] == "after the garbage"
            assert len(ws.messages) == 1
        dead = await client.xrange(keys.dead_letters)
        assert len(dead) == 3
        reasons = [fields[b"reason"].decode() for _, fields in dead]
        assert "invalid envelope" in reasons[0]
        assert "missing field" in reasons[1]
        assert "invalid gpio.state.changed data" in reasons[2]
        assert int(await client.get(keys.dead_letter_count)) == 3
    finally:
        await client.aclose()
