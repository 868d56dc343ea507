"""Agents are confined tenants: a node's credentials reach its own keys and nothing else,
and the controller checks every report before anything of it reaches state or /ws."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError

from common import gpio, reports
from common.keys import AGENT_GROUP, COMMAND_FIELD, Keys
from controller import appkeys
from tests.conftest import RunningController
from tests.support import processes
from tests.support.redis_server import free_port
from tests.support.streams import stream_events
from tests.support.waiting import wait_until
from tests.support.wsclient import WsRecorder

KEYS = Keys()
FACTS = {"hostname": "h", "ip_address": "127.0.0.1", "model": "Raspberry Pi 4 Model B",
         "arch": "aarch64", "os": "Raspberry Pi OS", "kernel": "6.6"}


def started(node_id: str, **facts: str) -> reports.Started:
    return reports.Started(facts=reports.NodeFacts(node_id=node_id, **{**FACTS, **facts}))


def pin(name: str, node: str, bcm: int) -> dict[str, object]:
    return {"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "pin": bcm, "mode": "output", "state": "low"}}


class Tenant:
    """A node's agent as Redis sees it: its own user, speaking the agent's protocol."""

    def __init__(self, node_id: str, url: str) -> None:
        self.node_id = node_id
        self.url = url
        self.redis = aioredis.Redis.from_url(url)

    async def report(self, report: reports.AnyReport | bytes) -> str:
        """Append a report and ring, in one transaction, as the agent's outbox does."""
        raw = report if isinstance(report, bytes) else reports.encode(report)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(KEYS.ingress(self.node_id), {reports.REPORT_FIELD: raw})
            pipe.publish(KEYS.ring(self.node_id), b"")
            entry, _ = await pipe.execute()
        return str(entry.decode())

    async def close(self) -> None:
        await self.redis.aclose()


@pytest.fixture
async def tenants(controller: RunningController) -> AsyncIterator[dict[str, Tenant]]:
    made = {n: Tenant(n, await processes.enroll(controller.url, n)) for n in ("pi-a", "pi-b")}
    try:
        for tenant in made.values():
            await tenant.report(started(tenant.node_id))
        yield made
    finally:
        for tenant in made.values():
            await tenant.close()


async def node_status(admin: aioredis.Redis, node_id: str) -> str | None:
    raw = await admin.hget(KEYS.node(node_id), "status")
    return raw.decode() if raw else None


async def test_credentials_reach_the_nodes_own_keys_and_nothing_else(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession,
        tenants: dict[str, Tenant]) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    a = tenants["pi-a"].redis
    try:
        await wait_until(lambda: node_status(admin, "pi-b"), 10, what="pi-b registered")
        async with http.post(f"{controller.url}/api/v1/gpio", json=pin("led-b", "pi-b", 17)
                             ) as response:
            assert response.status == 201, await response.text()
        async with http.post(f"{controller.url}/api/v1/tokens",
                             json={"name": "kiosk", "role": "viewer"}) as response:
            assert response.status == 201

        # Its own keys work, each for what an agent does with it.
        await a.xadd(KEYS.ingress("pi-a"), {reports.REPORT_FIELD: reports.encode(
            reports.LogLine(level="info", message="mine"))})
        await a.set(KEYS.alive("pi-a"), 1)
        await a.xgroup_create(KEYS.commands("pi-a"), AGENT_GROUP, id="0", mkstream=True)
        await a.xreadgroup(AGENT_GROUP, "pi-a", {KEYS.commands("pi-a"): ">"})
        assert isinstance(await a.hgetall(KEYS.desired("pi-a")), dict)

        forbidden = {
            "read the token table": a.hgetall(KEYS.tokens),
            "add a token": a.hset(KEYS.tokens, "x", "y"),
            "read a session": a.get(KEYS.session("x")),
            "read pinned host keys": a.hgetall(KEYS.host_keys),
            "read credentials records": a.hgetall(KEYS.agents),
            "read a cluster": a.hgetall(KEYS.cluster("c")),
            "read a job": a.hgetall(KEYS.job("j")),
            "write the shared event stream": a.xadd(KEYS.events, {b"e": b"x"}),
            "read the shared event stream": a.xrange(KEYS.events),
            "write another node's ingress": a.xadd(KEYS.ingress("pi-b"), {b"r": b"x"}),
            "read another node's commands": a.xreadgroup(
                AGENT_GROUP, "x", {KEYS.commands("pi-b"): ">"}),
            "write another node's commands": a.xadd(KEYS.commands("pi-b"), {b"c": b"x"}),
            "write its own commands": a.xadd(KEYS.commands("pi-a"), {b"c": b"x"}),
            "beat for another node": a.set(KEYS.alive("pi-b"), 1),
            "read another node's declared pins": a.hgetall(KEYS.desired("pi-b")),
            "write its own declared pins": a.hset(KEYS.desired("pi-a"), "x", "y"),
            "write its node record": a.hset(KEYS.node("pi-a"), "status", "ready"),
            "rewrite another node's address": a.hset(KEYS.node("pi-b"), "ip_address", "6.6.6.6"),
            "write a GPIO resource's status": a.hset(KEYS.gpio("led-b"), "status", "{}"),
            "write the heartbeats": a.zadd(KEYS.heartbeats, {"pi-b": 1}),
            "write the dead letters": a.xadd(KEYS.dead_letters, {b"x": b"y"}),
            "list keys": a.keys("*"),
            "flush everything": a.flushall(),
            "change ACLs": a.execute_command("ACL", "SETUSER", "pic:agent:pi-a", "+@all"),
            "publish": a.publish("pic:anything", "x"),
        }
        for what, attempt in forbidden.items():
            with pytest.raises(NoPermissionError):
                await attempt
                pytest.fail(f"an agent could {what}")
        # Nothing it tried reached shared state.
        assert await admin.hget(KEYS.node("pi-b"), "ip_address") == b"127.0.0.1"
        assert await admin.hlen(KEYS.tokens) == 2  # the bootstrap admin and the kiosk
    finally:
        await admin.aclose()


async def test_forged_and_bad_reports_are_dead_lettered_and_never_reach_ws(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession,
        tenants: dict[str, Tenant]) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    a = tenants["pi-a"]
    try:
        await wait_until(lambda: node_status(admin, "pi-b"), 10, what="pi-b registered")
        async with http.post(f"{controller.url}/api/v1/gpio", json=pin("led-b", "pi-b", 17)
                             ) as response:
            assert response.status == 201
        async with http.post(f"{controller.url}/api/v1/gpio", json=pin("led-a", "pi-a", 5)
                             ) as response:
            assert response.status == 201
        async with WsRecorder(http, controller.ws_url) as ws:
            ahead = gpio.GpioStatus(phase="Applied", state="high", observed_generation=9)
            forged = [
                await a.report(b"\xc1 not msgpack"),
                await a.report(msgspec.msgpack.encode({"kind": "reboot-everything"})),
                await a.report(b"\x90" + b"x" * (reports.MAX_REPORT_BYTES + 1)),
                await a.report(started("pi-b", ip_address="6.6.6.6")),
                await a.report(reports.GpioReport(
                    resource="led-b", pin=17, status=gpio.GpioStatus(
                        phase="Applied", state="high", observed_generation=1))),
                await a.report(reports.GpioReport(resource="led-a", pin=5, status=ahead)),
                await a.report(reports.GpioReport(resource="led-a", pin=6, status=gpio.GpioStatus(
                    phase="Applied", state="high", observed_generation=1))),
                await a.report(reports.GpioReport(resource="nope", pin=5, status=ahead)),
                await a.report(started("pi-a", ip_address="not\nan address")),
            ]
            # The pipeline goes on: a good report right behind them is applied.
            await a.report(reports.LogLine(level="warning", message="after the garbage"))
            after = await ws.wait_for(
                lambda m: m["type"] == "system.log.created"
                and m["data"]["message"] == "after the garbage", what="the good report")
            assert after["node_id"] == "pi-a"
            assert after["data"]["source"] == "agent/"
            dead = {fields[b"id"].decode(): fields for _, fields in
                    await admin.xrange(KEYS.dead_letters)}
            assert set(dead) == set(forged)
            reasons = [dead[i][b"reason"].decode() for i in forged]
            assert "invalid report" in reasons[0]
            assert "invalid report" in reasons[1] and "reboot-everything" in reasons[1]
            assert "exceeds" in reasons[2]
            assert "reported facts for node 'pi-b'" in reasons[3]
            assert "of node pi-b" in reasons[4]
            assert "generation 9" in reasons[5] and "ahead" in reasons[5]
            assert "BCM 6" in reasons[6]
            assert "does not exist" in reasons[7]
            assert "ip_address" in reasons[8]
            assert all(dead[i][b"node"] == b"pi-a" for i in forged)
            assert int(await admin.get(KEYS.dead_letter_count)) == len(forged)
            # One warning for the burst, naming the node, and nothing forged on /ws.
            warnings = [m for m in ws.of_type("system.log.created")
                        if m["data"]["source"] == "controller/ingest"]
            assert len(warnings) == 1
            assert warnings[0]["node_id"] == "pi-a" and "pi-a" in warnings[0]["data"]["message"]
            assert not [m for m in ws.messages if m.get("type") == "gpio.state.changed"]
            assert not [m for m in ws.messages if m.get("node_id") == "pi-b"]
        # ...nor in state: pi-b keeps its address, led-b was never reported.
        assert await admin.hget(KEYS.node("pi-b"), "ip_address") == b"127.0.0.1"
        assert await admin.hget(KEYS.gpio("led-b"), "status") is None
        assert not [e for e in await stream_events(redis_url) if e.node_id == "pi-b"
                    and e.type == "gpio.state.changed"]
    finally:
        await admin.aclose()


async def test_a_flood_is_cut_at_the_rate_limit_with_one_warning(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession,
        tenants: dict[str, Tenant]) -> None:
    settings = controller.app[appkeys.SETTINGS]  # type: ignore[attr-defined]
    burst = int(settings.agent_max_rate * 10)
    a = tenants["pi-a"]
    admin = aioredis.Redis.from_url(redis_url)
    try:
        async with a.redis.pipeline(transaction=False) as pipe:
            flood = reports.encode(reports.LogLine(level="info", message="flood"))
            for _ in range(burst * 2):
                pipe.xadd(KEYS.ingress("pi-a"), {reports.REPORT_FIELD: flood})
            await pipe.execute()

        async def drained() -> bool:
            return await admin.xlen(KEYS.ingress("pi-a")) == 0

        await wait_until(drained, 30, what="the flood to be read")
        logged = [e for e in await stream_events(redis_url)
                  if e.type == "system.log.created" and e.data["message"] == "flood"]
        rejected = int(await admin.get(KEYS.dead_letter_count) or 0)
        # The bucket holds 10 s of the rate; it refills while the flood is read, so a little
        # more than a burst gets through, never the whole flood.
        assert burst <= len(logged) < burst * 2
        assert len(logged) + rejected == burst * 2
        warnings = [e for e in await stream_events(redis_url)
                    if e.type == "system.log.created" and e.data["source"] == "controller/ingest"]
        assert len(warnings) == 1 and "rate limit" in warnings[0].data["message"]
    finally:
        await admin.aclose()


async def test_rotating_or_deleting_credentials_cuts_the_agent_off(
        redis_url: str, tmp_path: Path) -> None:
    ctl = processes.controller(redis_url, tmp_path / "ctl.log", extra=[
        "--heartbeat-interval", "0.25", "--missed-heartbeats", "4", "--lease-ttl", "1"]
        ).start()
    admin = aioredis.Redis.from_url(redis_url)
    agent = None
    try:
        await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]
        url = await processes.enroll(ctl.url, "pi-r")  # type: ignore[attr-defined]
        agent = processes.agent(url, "pi-r", tmp_path / "agent.log", confined=False,
                                extra=["--heartbeat-interval", "0.25"]).start()
        await wait_until(lambda: _status_is(admin, "pi-r", "ready"), 15, what="ready")

        rotated = await processes.enroll(ctl.url, "pi-r")  # type: ignore[attr-defined]
        assert rotated != url
        # The old password stops working at once...
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(url).ping()
        # ...the running agent is disconnected, says so once, and its node goes offline.
        await wait_until(lambda: _status_is(admin, "pi-r", "offline"), 15, what="offline")
        await wait_until(lambda: "refused this agent's credentials" in agent.log(), 10,
                         what="the agent's log line")
        log = agent.log()
        assert log.count("refused this agent's credentials") == 1
        assert "Traceback" not in log
        assert url.split("@")[0].split(":")[-1] not in log  # its password is never logged

        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {processes.ADMIN_TOKEN}"}) as http:
            async with http.delete(f"{ctl.url}/api/v1/nodes/pi-r/agent-credentials"  # type: ignore[attr-defined]
                                   ) as response:
                assert response.status == 204
            async with http.delete(f"{ctl.url}/api/v1/nodes/pi-r/agent-credentials"  # type: ignore[attr-defined]
                                   ) as response:
                assert response.status == 404
                body = await response.json()
                assert body["error"] == "not_found"
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(rotated).ping()
        users = await admin.execute_command("ACL", "USERS")
        assert b"pic:agent:pi-r" not in users
    finally:
        if agent is not None:
            agent.stop()
        ctl.stop()
        await admin.aclose()
    assert "Traceback" not in ctl.log()  # type: ignore[attr-defined]


async def _status_is(admin: aioredis.Redis, node_id: str, status: str) -> bool:
    return await node_status(admin, node_id) == status


async def test_agent_with_wrong_credentials_says_so_in_one_line(
        controller: RunningController, redis_url: str, tmp_path: Path) -> None:
    url = await processes.enroll(controller.url, "pi-w")
    wrong = url.replace(url.split("@")[0].split(":")[-1], "not-the-password")
    agent = processes.agent(wrong, "pi-w", tmp_path / "agent.log", confined=False).start()
    admin = aioredis.Redis.from_url(redis_url)

    async def refused() -> int:
        # Redis' ACL log counts every refused login of the user.
        log = await admin.execute_command("ACL", "LOG")
        return sum(int(_entry(e).get(b"count", 0)) for e in log
                   if _entry(e).get(b"username") == b"pic:agent:pi-w")

    try:
        await wait_until(lambda: "refused this agent's credentials" in agent.log(), 15,
                         what="the agent's complaint")
        before = await refused()

        async def kept_trying() -> bool:
            return await refused() >= before + 5

        await wait_until(kept_trying, 30, what="five more refused logins")
        assert agent.running
        log = agent.log()
        assert log.count("refused this agent's credentials") == 1
        assert "Traceback" not in log
        assert "not-the-password" not in log
    finally:
        agent.stop()
        await admin.aclose()


def _entry(raw: list[bytes] | dict[bytes, bytes]) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


async def test_credentials_are_answered_once_and_never_readable_again(
        controller: RunningController, http: aiohttp.ClientSession, redis_url: str) -> None:
    async with http.post(f"{controller.url}/api/v1/nodes/pi-c/agent-credentials") as response:
        assert response.status == 201
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert set(body) == {"redis_url", "username"}
    assert body["username"] == "pic:agent:pi-c"
    assert body["redis_url"].startswith("redis://pic%3Aagent%3Api-c:")
    password = body["redis_url"].split("@")[0].rsplit(":", 1)[1]
    admin = aioredis.Redis.from_url(redis_url)
    try:
        record = (await admin.hget(KEYS.agents, "pi-c")).decode()
        assert password not in record  # only its hash is kept
    finally:
        await admin.aclose()
    async with http.post(f"{controller.url}/api/v1/nodes/Not_A_Node/agent-credentials"
                         ) as response:
        assert response.status == 422
        assert (await response.json())["field"] == "node_id"
    viewer = await _token(http, controller.url, "operator")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {viewer}"}) as other, \
            other.post(f"{controller.url}/api/v1/nodes/pi-c/agent-credentials") as response:
        assert response.status == 403


async def _token(http: aiohttp.ClientSession, url: str, role: str) -> str:
    async with http.post(f"{url}/api/v1/tokens", json={"name": f"t-{role}", "role": role}
                         ) as response:
        return str((await response.json())["token"])


async def test_agent_users_come_back_after_a_redis_restart(private_redis, tmp_path: Path  # type: ignore[no-untyped-def]
                                                           ) -> None:
    ctl = processes.controller(private_redis.url, tmp_path / "ctl.log",
                               extra=["--lease-ttl", "1"]).start()
    try:
        await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]
        url = await processes.enroll(ctl.url, "pi-s")  # type: ignore[attr-defined]
        assert await aioredis.Redis.from_url(url).ping()
        private_redis.kill()
        private_redis.start()  # ACL users live in memory only: gone now...

        async def works_again() -> bool:
            client = aioredis.Redis.from_url(url)
            try:
                return bool(await client.ping())
            except AuthenticationError:
                return False
            finally:
                await client.aclose()

        await wait_until(works_again, 20, what="the agent's user to be re-created")
    finally:
        ctl.stop()


async def test_commands_carry_only_what_the_node_needs(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession,
        tenants: dict[str, Tenant]) -> None:
    """The desired hash an agent may read mirrors its node's resources, and only those."""
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await wait_until(lambda: node_status(admin, "pi-b"), 10, what="pi-b registered")
        for name, node, bcm in (("led-a", "pi-a", 5), ("led-b", "pi-b", 6)):
            async with http.post(f"{controller.url}/api/v1/gpio", json=pin(name, node, bcm)
                                 ) as response:
                assert response.status == 201
        declared = await tenants["pi-a"].redis.hgetall(KEYS.desired("pi-a"))
        assert set(declared) == {b"led-a"}
        assert gpio.decode_command(declared[b"led-a"]).spec.pin == 5
        async with http.delete(f"{controller.url}/api/v1/gpio/led-a") as response:
            assert response.status == 204
        assert await tenants["pi-a"].redis.hgetall(KEYS.desired("pi-a")) == {}
        entries = await admin.xrange(KEYS.commands("pi-a"))
        assert [gpio.decode_command(f[COMMAND_FIELD]).op for _, f in entries] == [
            "apply", "release"]
    finally:
        await admin.aclose()


def test_free_port_helper_is_loopback() -> None:
    assert 0 < free_port() < 65536


async def test_deleting_a_node_removes_its_agent_user(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession,
        tenants: dict[str, Tenant]) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await wait_until(lambda: node_status(admin, "pi-b"), 10, what="pi-b registered")
        async with http.delete(f"{controller.url}/api/v1/nodes/pi-b") as response:
            assert response.status == 204
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(tenants["pi-b"].url).ping()
        assert b"pic:agent:pi-b" not in await admin.execute_command("ACL", "USERS")
        assert await admin.hget(KEYS.agents, "pi-b") is None
        # The other node's agent is untouched.
        assert await tenants["pi-a"].redis.ping()
    finally:
        await admin.aclose()


async def test_a_report_whose_ring_was_lost_is_read_by_the_next_sweep(
        controller: RunningController, redis_url: str, tenants: dict[str, Tenant]) -> None:
    from controller.ingest import SWEEP_SECONDS

    admin = aioredis.Redis.from_url(redis_url)
    try:
        await wait_until(lambda: node_status(admin, "pi-a"), 10, what="pi-a registered")
        # Appended without ringing, as when the controller was reconnecting at that moment.
        await tenants["pi-a"].redis.xadd(KEYS.ingress("pi-a"), {
            reports.REPORT_FIELD: reports.encode(reports.Stopping(reason="quiet"))})
        started = time.monotonic()
        await wait_until(lambda: _status_is(admin, "pi-a", "offline"), SWEEP_SECONDS + 5,
                         what="the sweep to read it")
        assert time.monotonic() - started <= SWEEP_SECONDS + 1.5
    finally:
        await admin.aclose()
