"""Losing the Redis primary behind Sentinel: agents and controllers follow the promoted
replica by themselves, a resuming /ws client never misses an event silently, a GPIO change
after the failover is applied, and singleton duties never overlap beyond the lease bound.
Also: writes that must reach a replica say so when none confirms them."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from common.keys import Keys
from tests.conftest import running_controller
from tests.support import processes
from tests.support.processes import ADMIN_TOKEN
from tests.support.sentinel import SentinelSet
from tests.support.waiting import wait_until

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "s3cret"
LEASE_TTL = 3.0
NODE = "pi-ha-1"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelSet]:
    with SentinelSet(tmp_path / "redis", password=PASSWORD) as started:
        yield started


class ResumingClient:
    """A /ws client that reconnects every ``period`` seconds with ``since`` (as a dashboard
    on a flaky Wi-Fi does), recording every event id and every ws.resync."""

    def __init__(self, url: str, period: float = 0.7) -> None:
        self.url = url
        self.period = period
        self.received: list[tuple[str, str]] = []
        """("event", id) and ("resync", since), in arrival order."""
        self.last: str | None = None
        self.states: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    def ids(self) -> list[str]:
        return [value for kind, value in self.received if kind == "event"]

    async def run(self) -> None:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            while True:
                query = f"?since={self.last}" if self.last else ""
                try:
                    async with http.ws_connect(self.url + query, heartbeat=None) as ws:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self.period):
                                async for msg in ws:
                                    self._take(msg.json())
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.1)

    def _take(self, message: dict[str, Any]) -> None:
        if message["type"] == "ws.resync":
            self.received.append(("resync", message["since"]))
        elif "id" in message and not message["type"].startswith("ws."):
            self.received.append(("event", message["id"]))
            self.last = message["id"]
            if message["type"] == "gpio.state.changed":
                self.states.append(message["data"])

    async def __aenter__(self) -> ResumingClient:
        self.task = asyncio.create_task(self.run(), name="resuming ws client")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


LEASE_LINE = re.compile(r"^(\S+ \S+) .*?(took|lost|handing) the (\S+) lease")


def lease_intervals(log: str) -> dict[str, list[tuple[float, float]]]:
    """Per lease, when this controller held it (from its log), open ones to now."""
    held: dict[str, list[tuple[float, float]]] = {}
    since: dict[str, float] = {}
    for line in log.splitlines():
        found = LEASE_LINE.match(line)
        if not found:
            continue
        stamp = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        name = found.group(3)
        if found.group(2) == "took":
            since[name] = stamp
        elif name in since:
            held.setdefault(name, []).append((since.pop(name), stamp))
    end = datetime.now().timestamp()
    for name, start in since.items():
        held.setdefault(name, []).append((start, end))
    return held


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return max((min(x1, y1) - max(x0, y0) for x0, x1 in a for y0, y1 in b), default=0.0)


@pytest.mark.timeout(180)
async def test_losing_the_primary_keeps_the_fleet(cluster: SentinelSet, tmp_path: Path
                                                  ) -> None:
    url = cluster.sentinel_url(password=PASSWORD)
    settings = ["--lease-ttl", str(LEASE_TTL)]
    first = processes.controller(url, tmp_path / "a.log", extra=settings).start()
    second = processes.controller(url, tmp_path / "b.log", extra=settings).start()
    agent: processes.Proc | None = None
    try:
        await processes.wait_ready(first.url, first)  # type: ignore[attr-defined]
        await processes.wait_ready(second.url, second)  # type: ignore[attr-defined]
        agent = processes.agent(url, NODE, tmp_path / "agent.log",
                                extra=["--health-interval", "0.3"]).start()
        api = f"{first.url}/api/v1"  # type: ignore[attr-defined]
        async with aiohttp.ClientSession(headers=AUTH) as http, ResumingClient(
                f"{first.url.replace('http', 'ws')}/ws") as client:  # type: ignore[attr-defined]

            async def node_ready() -> bool:
                async with http.get(f"{api}/nodes/{NODE}") as reply:
                    return reply.status == 200 and (await reply.json())["status"] == "ready"

            await wait_until(node_ready, 30, what="the agent's node ready")
            async with http.post(f"{api}/gpio", json={
                    "apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
                    "metadata": {"name": "relay"},
                    "spec": {"nodeName": NODE, "pin": 17, "mode": "output",
                             "state": "low"}}) as reply:
                assert reply.status == 201, await reply.text()
            await wait_until(lambda: any(s["resource"] == "relay" for s in client.states), 15,
                             what="the relay confirmed")
            before = len(client.ids())
            await wait_until(lambda: len(client.ids()) > before + 5, 15, what="events flowing")

            old = cluster.kill_primary()
            cluster.wait_for_new_primary(old.port)
            seen = len(client.ids())
            await wait_until(lambda: len(client.ids()) > seen + 5, 60,
                             what="events flowing from the promoted replica")

            async def patched() -> bool:
                async with http.patch(f"{api}/gpio/relay",
                                      json={"spec": {"state": "high"}}) as reply:
                    return reply.status == 200
            await wait_until(patched, 30, what="a GPIO change accepted after the failover")
            await wait_until(lambda: any(s["resource"] == "relay" and s["state"] == "high"
                                         for s in client.states), 30,
                             what="the agent applying the change made after the failover")

            # Ids strictly increase; between two events with no ws.resync between them,
            # the stream that survived holds nothing the client did not get.
            ids = client.ids()
            keys = [tuple(map(int, i.split("-"))) for i in ids]
            assert keys == sorted(set(keys)), "ids went back or repeated"
            survivor = redis.Redis(port=cluster.current_primary_port(), password=PASSWORD)
            stream = [raw.decode() for raw, _ in survivor.xrange(Keys().events)]
            survivor.close()
            received = set(ids)
            missed: list[str] = []
            previous: str | None = None
            for kind, value in client.received:
                if kind == "resync":
                    previous = None
                    continue
                if previous is not None:
                    between = [s for s in stream if _key(previous) < _key(s) < _key(value)]
                    missed += [s for s in between if s not in received]
                previous = value
            assert not missed, f"silently missed {len(missed)} events: {missed[:5]}"

        # Singleton duties: never held by both controllers longer than the lease bound.
        a, b = lease_intervals(first.log()), lease_intervals(second.log())
        assert a or b
        for name in set(a) & set(b):
            assert overlap(a[name], b[name]) <= LEASE_TTL, name
    finally:
        for proc in (agent, first, second):
            if proc is not None:
                await asyncio.to_thread(proc.stop)


def _key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


@contextlib.asynccontextmanager
async def replicated_controller(cluster: SentinelSet, replicas: int
                                ) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with running_controller(cluster.sentinel_url(password=PASSWORD),
                                  redis_min_replicas=replicas,
                                  redis_replica_timeout=0.3) as controller, \
            aiohttp.ClientSession(headers=AUTH) as http:
        yield controller.url, http


async def test_writes_that_need_a_replica_say_when_none_confirms(cluster: SentinelSet) -> None:
    async with replicated_controller(cluster, 1) as (url, http), http.post(
            f"{url}/api/v1/tokens", json={"name": "kiosk", "role": "viewer"}) as reply:
        assert reply.status == 201, await reply.text()
    async with replicated_controller(cluster, 2) as (url, http):  # there is only one replica
        async with http.post(f"{url}/api/v1/tokens",
                             json={"name": "wall", "role": "viewer"}) as reply:
            body = await reply.json()
            assert reply.status == 503, body
            assert body["error"] == "not_replicated"
            assert "1 of 2 replica(s)" in body["reason"]
        async with http.get(f"{url}/api/v1/tokens") as reply:
            names = [t["name"] for t in (await reply.json())["items"]]
            assert "wall" in names  # on the primary: the answer said it may be lost


async def test_events_lost_in_a_failover_become_a_resync_never_a_gap(
        cluster: SentinelSet) -> None:
    """The replica is frozen while events are written, then the primary dies: the promoted
    replica lacks events clients already have. They are told (ws.resync), ids go on after
    the lost ones, and resuming from a lost id gives ws.resync rather than a replay."""
    from common import events
    from common.keys import EVENT_FIELD
    from controller import appkeys
    from tests.support.wsclient import WsRecorder

    primary = redis.Redis(port=cluster.current_primary_port(), password=PASSWORD)

    def publish(count: int) -> list[str]:
        return [primary.xadd(Keys().events, {EVENT_FIELD: events.encode(
            events.node_status_changed(f"pi-{n}", "ready"))}).decode() for n in range(count)]

    async with running_controller(cluster.sentinel_url(password=PASSWORD)) as controller, \
            aiohttp.ClientSession(headers=AUTH) as http, \
            WsRecorder(http, controller.ws_url) as ws:
        kept = publish(3)
        await ws.wait_for(lambda m: m.get("id") == kept[-1], 10, "the replicated events")
        await cut_off(cluster)
        lost = publish(3)
        await ws.wait_for(lambda m: m.get("id") == lost[-1], 10, "the doomed events")
        old = cluster.kill_primary()
        primary.close()
        cluster.wait_for_new_primary(old.port)
        resync = await ws.wait_for(lambda m: m["type"] == "ws.resync", 30, "ws.resync")
        assert resync["since"] == lost[-1]
        assert controller.app[appkeys.FEED].lost_events == 1
        primary = redis.Redis(port=cluster.current_primary_port(), password=PASSWORD)
        survivors = [raw.decode() for raw, _ in primary.xrange(Keys().events)]
        assert survivors[-3:] == kept and not set(lost) & set(survivors)
        [after] = publish(1)
        assert _key(after) > _key(lost[-1])  # ids never go back
        await ws.wait_for(lambda m: m.get("id") == after, 10, "an event after the failover")
        primary.close()
        async with WsRecorder(http, f"{controller.ws_url}?since={lost[0]}") as late:
            again = await late.wait_for(lambda m: m["type"] == "ws.resync", 10, "ws.resync")
            assert again["since"] == lost[0]
            assert not [m for m in late.messages if m.get("id") == after]


async def cut_off(cluster: SentinelSet) -> None:
    """Cut the replica off its primary (it can no longer log in to it), so what is written
    next is on the primary only: what a failover loses when replication lags."""
    port = cluster.current_primary_port()
    [replica] = [s for s in cluster.servers if s.port != port]
    with redis.Redis(port=replica.port, password=PASSWORD) as client:
        client.config_set("masterauth", "not-the-password")
    with redis.Redis(port=port, password=PASSWORD) as client:
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")

    def link() -> bool:
        with redis.Redis(port=replica.port, password=PASSWORD) as client:
            return client.info("replication").get("master_link_status") == "down"
    await wait_until(link, 10, what="the replica cut off")


@pytest.mark.timeout(120)
async def test_a_gpio_change_lost_in_a_failover_is_undone_on_the_pin(
        cluster: SentinelSet, tmp_path: Path) -> None:
    """The change was applied to the pin, then lost with the primary: the store's state
    is the truth, so the agent puts the pin back and says so."""
    from tests.support.wsclient import WsRecorder

    url = cluster.sentinel_url(password=PASSWORD)
    controller = processes.controller(url, tmp_path / "controller.log").start()
    agent = processes.agent(url, NODE, tmp_path / "agent.log")
    try:
        await processes.wait_ready(controller.url, controller)  # type: ignore[attr-defined]
        agent.start()
        api = f"{controller.url}/api/v1"  # type: ignore[attr-defined]
        ws_url = f"{controller.url.replace('http', 'ws')}/ws"  # type: ignore[attr-defined]
        async with aiohttp.ClientSession(headers=AUTH) as http, WsRecorder(http, ws_url) as ws:

            def relay(state: str, reason: str | None = None) -> Any:
                return lambda m: (m["type"] == "gpio.state.changed"
                                  and m["resource"] == "relay" and m["data"]["state"] == state
                                  and (reason is None or m["data"].get("reason") == reason))

            async def created() -> bool:
                async with http.post(f"{api}/gpio", json={
                        "apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
                        "metadata": {"name": "relay"}, "spec": {
                            "nodeName": NODE, "pin": 17, "mode": "output",
                            "state": "low"}}) as reply:
                    return reply.status == 201
            await wait_until(created, 30, what="the relay created (the node registered)")
            await ws.wait_for(relay("low"), 20, "the relay low")
            await cut_off(cluster)
            async with http.patch(f"{api}/gpio/relay", json={"spec": {"state": "high"}}
                                  ) as reply:
                assert reply.status == 200, await reply.text()
            await ws.wait_for(relay("high"), 20, "the relay high (on the primary only)")
            old = cluster.kill_primary()
            cluster.wait_for_new_primary(old.port)
            await ws.wait_for(lambda m: m["type"] == "ws.resync", 30, "ws.resync")
            back = await ws.wait_for(relay("low", "re-applied: the store went back"), 60,
                                     "the pin put back to the store's state")
            assert ws.messages.index(back) > ws.messages.index(
                next(m for m in ws.messages if relay("high")(m)))

            async def settled() -> dict[str, Any] | None:
                async with http.get(f"{api}/gpio/relay") as reply:
                    body: dict[str, Any] = await reply.json()
                return body if body["status"].get("state") == "low" else None
            body = await wait_until(settled, 20, what="the resource's status low")
            assert body["spec"]["state"] == "low"
    finally:
        await asyncio.to_thread(agent.stop)
        await asyncio.to_thread(controller.stop)
