"""GPIO end to end: REST -> controller -> Redis -> agent (pigpio backend) -> pigpiod -> /ws.

Every part is real except pigpiod, which needs a Pi: the agent's real ``pigpio`` client
talks to a pigpiod-protocol server run by the test (tests/support/pigpiod.py).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from common import events
from common.keys import AGENT_GROUP, EVENT_FIELD, Keys
from tests.support import processes
from tests.support.pigpiod import ALT5, OUTPUT, FakePigpiod
from tests.support.processes import ADMIN_TOKEN, Proc
from tests.support.redis_server import RedisServer
from tests.support.rgpiod import FakeRgpiod
from tests.support.waiting import wait_until
from tests.support.wsclient import WsRecorder

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NODE = "pi-gpio"


def manifest(name: str, node: str = NODE, **spec: object) -> dict[str, object]:
    return {"apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
            "metadata": {"name": name}, "spec": {"nodeName": node, **spec}}


@dataclass
class Rig:
    redis_url: str
    controller: Any
    """A controller process, or the in-process one (anything with a ``url``)."""
    daemon: FakePigpiod
    http: aiohttp.ClientSession
    tmp: Path
    agent: Proc | None = None
    starts: int = 0

    @property
    def api(self) -> str:
        return f"{self.controller.url}/api/v1"

    @property
    def ws_url(self) -> str:
        return f"{self.controller.url.replace('http', 'ws')}/ws"

    async def start_agent(self, *extra: str) -> Proc:
        self.starts += 1
        backend = extra or ("--gpio", "pigpio", "--pigpio-port", str(self.daemon.port))
        self.agent = processes.agent(
            self.redis_url, NODE, self.tmp / f"agent-{self.starts}.log",
            extra=[*backend, "--failsafe-after", "1"]).start()
        agent = self.agent

        async def ready() -> bool:
            if not agent.running:
                raise AssertionError(f"agent exited:\n{agent.log()[-3000:]}")
            async with self.http.get(f"{self.api}/nodes") as response:
                body = await response.json()
            return any(n["id"] == NODE and n["status"] == "ready" for n in body["items"])

        await wait_until(ready, 20, what="agent ready")
        return agent

    async def create(self, name: str, **spec: object) -> dict[str, Any]:
        async with self.http.post(f"{self.api}/gpio", json=manifest(name, **spec)) as response:
            assert response.status == 201, await response.text()
            body: dict[str, Any] = await response.json()
            body["request_id"] = response.headers["X-Request-ID"]
            return body

    async def patch(self, name: str, spec: dict[str, object]) -> str:
        async with self.http.patch(f"{self.api}/gpio/{name}", json={"spec": spec}) as response:
            assert response.status == 200, await response.text()
            return response.headers["X-Request-ID"]

    async def get(self, name: str) -> dict[str, Any]:
        async with self.http.get(f"{self.api}/gpio/{name}") as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body

    async def phase(self, name: str, phase: str) -> dict[str, Any] | None:
        body = await self.get(name)
        return body if body["status"].get("phase") == phase else None

    async def stream(self, match: Callable[[events.Event], bool]) -> list[events.Event]:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            entries = await client.xrange(Keys().events)
        finally:
            await client.aclose()
        decoded = [events.decode(fields[EVENT_FIELD], raw.decode()) for raw, fields in entries]
        return [e for e in decoded if match(e)]


@pytest.fixture
async def daemon() -> AsyncIterator[FakePigpiod]:
    async with FakePigpiod() as server:
        yield server


async def make_rig(redis_url: str, daemon: FakePigpiod, tmp: Path) -> AsyncIterator[Rig]:
    ctl = processes.controller(redis_url, tmp / "controller.log").start()
    try:
        await processes.wait_ready(ctl.url, ctl)  # type: ignore[attr-defined]
        async with aiohttp.ClientSession(headers=AUTH) as http:
            rig = Rig(redis_url, ctl, daemon, http, tmp)
            try:
                yield rig
            finally:
                if rig.agent is not None:
                    # In a thread: the fake daemons live on this loop and must keep
                    # answering while the agent shuts down.
                    await asyncio.to_thread(rig.agent.stop)
    finally:
        await asyncio.to_thread(ctl.stop)


@pytest.fixture
async def rig(redis_url: str, daemon: FakePigpiod, tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in make_rig(redis_url, daemon, tmp_path):
        yield made


def state_changed(resource: str, **data: object) -> Callable[[dict[str, Any]], bool]:
    def match(message: dict[str, Any]) -> bool:
        return (message.get("type") == "gpio.state.changed"
                and message.get("resource") == resource
                and all(message["data"].get(k) == v for k, v in data.items()))
    return match


async def test_rest_change_drives_the_pin_and_is_confirmed_on_ws(rig: Rig) -> None:
    await rig.start_agent()
    daemon = rig.daemon
    async with WsRecorder(rig.http, rig.ws_url) as ws:
        await rig.create("relay", pin=17, mode="output", state="low")
        await wait_until(lambda: daemon.mode(17) == OUTPUT and (17, 0) in daemon.writes, 10,
                         what="relay configured")
        request_id = await rig.patch("relay", {"state": "high"})
        await wait_until(lambda: daemon.level(17) == 1, 10, what="BCM 17 driven high")
        event = await ws.wait_for(state_changed("relay", state="high"), what="confirmation")
        # The seed's shape: resource at the top; pin, state, pwm_duty (+ node) in data.
        assert event["resource"] == "relay" and event["node_id"] == NODE
        assert event["data"]["pin"] == 17 and event["data"]["node_id"] == NODE
        assert "pwm_duty" not in event["data"] or event["data"]["pwm_duty"] is None
        assert event["data"]["actor"] == "admin"
        assert event["data"]["request_id"] == request_id
        status = (await wait_until(lambda: rig.phase("relay", "Applied"), 10))["status"]
        assert status["state"] == "high" and status["lastChangedBy"] == "admin"
        assert status["requestId"] == request_id and status["backend"] == "pigpio"

        # active-low: logical high is 0 V on the pin.
        await rig.create("lamp", pin=27, mode="output", state="high", activeLow=True)
        await ws.wait_for(state_changed("lamp", state="high"), what="lamp confirmed")
        assert daemon.level(27) == 0

        # Hardware PWM on BCM 18 (frequency given), software PWM on BCM 22, a servo.
        await rig.create("fan", pin=18, mode="pwm", pwmDuty=40, pwmFrequency=25_000)
        await rig.create("dimmer", pin=22, mode="pwm", pwmDuty=12.5, pwmFrequency=800)
        await rig.create("pan", pin=23, mode="servo", servoPulseWidth=1500)
        fan = await ws.wait_for(state_changed("fan"), what="fan confirmed")
        assert fan["data"]["pwm_duty"] == 40
        await ws.wait_for(state_changed("dimmer"), what="dimmer confirmed")
        await ws.wait_for(state_changed("pan"), what="servo confirmed")
        assert (daemon.pin(18).hw_frequency, daemon.pin(18).hw_duty) == (25_000, 400_000)
        assert daemon.mode(18) == ALT5
        assert daemon.pin(22).hw_frequency == 0 and daemon.pin(22).pwm_duty == 125
        assert daemon.pin(23).servo == 1500


async def test_input_edges_become_events_and_the_level_is_readable(rig: Rig) -> None:
    await rig.start_agent()
    daemon = rig.daemon
    async with WsRecorder(rig.http, rig.ws_url) as ws:
        await rig.create("button", pin=5, mode="input", pull="up", activeLow=True,
                         debounceMs=20)
        # Wait until the agent's client has asked to hear about BCM 5 (NB) before the edge.
        await wait_until(lambda: daemon.watched(5), 10, what="BCM 5 watched")
        await ws.wait_for(state_changed("button", state="low"), what="initial level")
        daemon.inject(5, 0)  # pressed: pulled-up line goes to ground
        pressed = await ws.wait_for(state_changed("button", state="high"), what="press")
        assert pressed["data"]["reason"] == "input edge"
        status = (await rig.get("button"))["status"]
        assert status["state"] == "high"
        daemon.inject(5, 1)
        await ws.wait_for(state_changed("button", state="low", reason="input edge"),
                          what="release")


async def test_backend_errors_are_an_error_status_and_a_warning_not_a_crash(rig: Rig) -> None:
    await rig.start_agent()
    rig.daemon.refuse(24)
    async with WsRecorder(rig.http, rig.ws_url) as ws:
        await rig.create("forbidden", pin=24, mode="output", state="high")
        body = await wait_until(lambda: rig.phase("forbidden", "Error"), 10, what="Error")
        assert body["status"]["message"] == ("pigpiod refused set_mode(24, output): "
                                              "no permission to update GPIO")
        warning = await ws.wait_for(
            lambda m: m["type"] == "system.log.created" and "forbidden" in m["data"]["message"],
            what="a warning event")
        assert warning["data"]["level"] == "warning"
        # The agent lives on and applies the next command.
        await rig.create("fine", pin=25, mode="output", state="high")
        await ws.wait_for(state_changed("fine", state="high"), what="next command applied")
        assert rig.agent is not None and rig.agent.running


async def test_validation_errors_name_the_field(controller: Any, http: aiohttp.ClientSession,
                                               redis_url: str, daemon: FakePigpiod,
                                               tmp_path: Path) -> None:
    # The controller alone decides these: in-process, with the node known but no agent.
    client = aioredis.Redis.from_url(redis_url)
    await client.sadd(Keys().nodes, NODE)
    await client.aclose()
    rig = Rig(redis_url, controller, daemon, http, tmp_path)
    await rig.create("taken", pin=17, mode="output", state="low")
    await rig.create("sensor", pin=6, mode="input")
    cases: list[tuple[str, str, dict[str, object], int, str]] = [
        ("post", "", manifest("p1", pin=28, mode="output"), 422, "spec.pin"),
        ("post", "", manifest("p2", pin=17, mode="output"), 409, "spec.pin"),
        ("post", "", manifest("p3", pin=20, mode="pwm", pwmFrequency=20_000), 422,
         "spec.pwmFrequency"),
        ("post", "", manifest("p4", pin=18, mode="pwm", pwmDuty=101), 422, "spec.pwmDuty"),
        ("post", "", manifest("p5", pin=23, mode="servo", servoPulseWidth=100), 422,
         "spec.servoPulseWidth"),
        ("post", "", manifest("p6", node="pi-nowhere", pin=4, mode="output"), 422,
         "spec.nodeName"),
        ("patch", "/sensor", {"spec": {"state": "high"}}, 422, "spec.state"),
        ("post", "", manifest("taken", pin=16, mode="output"), 409, "metadata.name"),
        ("patch", "/taken", {"spec": {"pin": 40}}, 422, "spec.pin"),
    ]
    for method, path, body, status, field in cases:
        async with rig.http.request(method, f"{rig.api}/gpio{path}", json=body) as response:
            reply = await response.json()
            assert (response.status, reply.get("field")) == (status, field), (body, reply)
            assert reply["reason"]
    async with rig.http.post(f"{rig.api}/gpio", data=b"{oops",
                             headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
    async with aiohttp.ClientSession() as anonymous, anonymous.post(
            f"{rig.api}/gpio", json=manifest("p7", pin=4, mode="output")) as response:
        assert response.status == 401
    # Nothing of the refused requests was stored.
    async with rig.http.get(f"{rig.api}/gpio") as response:
        names = {item["metadata"]["name"] for item in (await response.json())["items"]}
    assert names == {"taken", "sensor"}
    assert (await rig.get("taken"))["spec"]["pin"] == 17


async def test_offline_node_keeps_the_command_pending_until_it_returns(rig: Rig) -> None:
    await rig.start_agent()
    assert rig.agent is not None
    await asyncio.to_thread(rig.agent.stop)
    created = await rig.create("porch", pin=17, mode="output", state="high")
    assert created["status"]["phase"] == "Pending"
    assert (await rig.get("porch"))["status"]["phase"] == "Pending"
    assert rig.daemon.level(17) == 0
    await rig.start_agent()
    body = await wait_until(lambda: rig.phase("porch", "Applied"), 15, what="applied")
    assert body["status"]["state"] == "high"
    assert rig.daemon.level(17) == 1


async def pending(redis_url: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        info = await client.xpending(Keys().commands(NODE), AGENT_GROUP)
    finally:
        await client.aclose()
    return int(info["pending"])


async def test_agent_killed_mid_command_applies_it_exactly_once_after_restart(rig: Rig
                                                                             ) -> None:
    await rig.start_agent()
    daemon = rig.daemon
    await rig.create("valve", pin=17, mode="output", state="low")
    await wait_until(lambda: rig.phase("valve", "Applied"), 10, what="valve applied")
    stall = daemon.stall_write(17)
    request_id = await rig.patch("valve", {"state": "high"})
    await wait_until(stall.reached.is_set, 10, what="the agent's WRITE to reach pigpiod")
    assert rig.agent is not None
    rig.agent.kill()  # SIGKILL while the hardware call is in flight
    await wait_until(lambda: stall.dropped, 10, what="the stalled WRITE to be abandoned")
    assert daemon.level(17) == 0
    assert await pending(rig.redis_url) == 1  # read, never acked

    writes_before = len(daemon.writes)
    await rig.start_agent()
    await wait_until(lambda: daemon.level(17) == 1, 15, what="valve opened after restart")
    await wait_until(lambda: rig.phase("valve", "Applied"), 10, what="status Applied")
    await wait_until(lambda: _zero(rig.redis_url), 10,
                     what="the replayed command acked")
    confirmations = await rig.stream(lambda e: e.type == events.GPIO_STATE_CHANGED
                                     and e.data.get("request_id") == request_id)
    assert len(confirmations) == 1, confirmations
    assert confirmations[0].data["state"] == "high"
    assert [w for w in daemon.writes[writes_before:] if w[0] == 17] == [(17, 1)]


async def _zero(redis_url: str) -> bool:
    return await pending(redis_url) == 0


async def test_restarted_agent_reapplies_the_declared_state(rig: Rig) -> None:
    await rig.start_agent()
    daemon = rig.daemon
    await rig.create("heater", pin=17, mode="output", state="high")
    await rig.create("fan", pin=12, mode="pwm", pwmDuty=30, pwmFrequency=20_000)
    await wait_until(lambda: daemon.level(17) == 1 and daemon.pin(12).hw_duty == 300_000, 10,
                     what="declared state applied")
    assert rig.agent is not None
    rig.agent.signal(signal.SIGTERM)
    assert await asyncio.to_thread(rig.agent.wait, 15) == 0
    daemon.reset()  # the Pi rebooted: every pin back to an input
    assert daemon.level(17) == 0
    await rig.start_agent()
    await wait_until(lambda: daemon.level(17) == 1 and daemon.pin(12).hw_duty == 300_000, 15,
                     what="declared state re-applied")
    assert daemon.mode(17) == OUTPUT
    reapplied = await wait_until(lambda: rig.stream(
        lambda e: e.type == events.GPIO_STATE_CHANGED and e.data.get("reason") == "reconcile"
        and e.resource == "heater"), 10, what="a reconcile event")
    assert reapplied[-1].data["state"] == "high"


@pytest.fixture
async def private_rig(private_redis: RedisServer, daemon: FakePigpiod,
                      tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in make_rig(private_redis.url, daemon, tmp_path):
        yield made


async def test_pins_go_to_their_safe_state_without_redis_and_back(
        private_rig: Rig, private_redis: RedisServer) -> None:
    rig, daemon = private_rig, private_rig.daemon
    await rig.start_agent()
    await rig.create("pump", pin=17, mode="output", state="high", safeState="low")
    await rig.create("motor", pin=13, mode="pwm", pwmDuty=80, safeState="low")
    await rig.create("light", pin=27, mode="output", state="high")  # no safe state
    await wait_until(lambda: daemon.level(17) == 1 and daemon.pin(13).pwm_duty == 800
                     and daemon.level(27) == 1, 10, what="declared state applied")

    private_redis.kill()
    await wait_until(lambda: daemon.level(17) == 0 and daemon.pin(13).pwm_duty == 0, 15,
                     what="fail-safe after --failsafe-after 1")
    assert daemon.level(27) == 1  # pins without a safe state are left alone

    private_redis.start()
    await wait_until(lambda: daemon.level(17) == 1 and daemon.pin(13).pwm_duty == 800, 20,
                     what="declared state restored")

    async def both(resource: str) -> list[events.Event] | None:
        found = await rig.stream(lambda e: e.type == events.GPIO_STATE_CHANGED
                                 and e.resource == resource
                                 and (e.data.get("reason") or "").startswith("failsafe"))
        return found if len(found) >= 2 else None

    pump = await wait_until(lambda: both("pump"), 15, what="fail-safe events for the pump")
    assert [(e.data["state"], e.data["reason"]) for e in pump] == [
        ("low", "failsafe: link to Redis lost"), ("high", "failsafe cleared: link restored")]
    motor = await wait_until(lambda: both("motor"), 15, what="fail-safe events for the motor")
    assert [e.data["pwm_duty"] for e in motor] == [0, 80]
    assert not await rig.stream(lambda e: e.resource == "light"
                                and (e.data.get("reason") or "").startswith("failsafe"))


async def test_pigpiod_restart_under_the_agent_is_healed(rig: Rig) -> None:
    await rig.start_agent()
    await rig.create("siren", pin=17, mode="output", state="high")
    await rig.create("beeper", pin=22, mode="pwm", pwmDuty=50)
    await wait_until(lambda: rig.daemon.level(17) == 1, 10, what="siren on")
    port = rig.daemon.port
    await rig.daemon.stop()  # pigpiod died: software PWM and modes are gone with it
    async with FakePigpiod(port=port) as fresh:
        await wait_until(lambda: fresh.level(17) == 1 and fresh.pin(22).pwm_duty == 500, 15,
                         what="pins re-applied on the new pigpiod")
        assert fresh.mode(17) == OUTPUT
        assert rig.agent is not None and rig.agent.running
        await rig.patch("siren", {"state": "low"})
        await wait_until(lambda: fresh.level(17) == 0, 10, what="commands work again")


async def test_agent_started_without_pigpiod_reports_errors_then_recovers(
        rig: Rig, daemon: FakePigpiod) -> None:
    port = daemon.port
    await daemon.stop()
    await rig.start_agent()
    await rig.create("gate", pin=17, mode="output", state="high")
    body = await wait_until(lambda: rig.phase("gate", "Error"), 10, what="Error status")
    assert "not reachable" in body["status"]["message"]
    async with FakePigpiod(port=port) as late:
        await wait_until(lambda: late.level(17) == 1, 15, what="applied once pigpiod is up")
        await wait_until(lambda: rig.phase("gate", "Applied"), 10, what="Applied")


async def test_raspberry_pi_5_through_rgpiod(rig: Rig) -> None:
    async with FakeRgpiod() as rgpiod:
        await rig.start_agent("--gpio", "rgpio", "--rgpio-port", str(rgpiod.port))
        async with WsRecorder(rig.http, rig.ws_url) as ws:
            await rig.create("relay", pin=17, mode="output", state="high")
            await ws.wait_for(state_changed("relay", state="high"), what="relay confirmed")
            assert rgpiod.level(17) == 1 and rgpiod.writes == [(17, 1)]  # no low glitch
            assert (await rig.get("relay"))["status"]["backend"] == "rgpio"
            await rig.create("button", pin=5, mode="input", pull="down")
            await wait_until(lambda: rgpiod.watched(5), 10, what="BCM 5 alerts")
            await ws.wait_for(state_changed("button", state="low"), what="initial level")
            rgpiod.inject(5, 1)
            await ws.wait_for(state_changed("button", state="high", reason="input edge"),
                              what="edge")
            await rig.create("dimmer", pin=22, mode="pwm", pwmDuty=30, pwmFrequency=1000)
            await ws.wait_for(state_changed("dimmer"), what="dimmer confirmed")
            assert rgpiod.line(22).pwm == (1000, 30)
