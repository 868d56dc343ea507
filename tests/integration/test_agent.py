"""The agent on its own: what it reports about its node, its outbox, its own warnings, and
that no secret reaches its log."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import redis.asyncio as aioredis

from agent import sysinfo
from agent.outbox import Link, Outbox
from common import events, redis_client, reports
from common.keys import AGENT_GROUP, Keys
from tests.conftest import RunningController
from tests.support import processes
from tests.support.redis_server import RedisServer, free_port
from tests.support.streams import stream_events
from tests.support.waiting import wait_until

KEYS = Keys()


def fake_pi(root: Path) -> Path:
    (root / "sys/firmware/devicetree/base").mkdir(parents=True)
    (root / "sys/firmware/devicetree/base/model").write_bytes(
        b"Raspberry Pi 4 Model B Rev 1.4\x00")
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n')
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.6.31+rpt-rpi-v8\n")
    return root


def test_facts_come_from_proc_sys_and_os_release(tmp_path: Path) -> None:
    facts = sysinfo.collect(node_id="", sysroot=str(fake_pi(tmp_path)), hostname="pi-node-1",
                            address="10.0.0.5", gpio_backend="sim")
    assert facts.node_id == "pi-node-1"
    assert facts.model == "Raspberry Pi 4 Model B Rev 1.4"
    assert facts.os == "Debian GNU/Linux 12 (bookworm)"
    assert facts.kernel == "6.6.31+rpt-rpi-v8"
    assert sysinfo.is_raspberry_pi(facts.model)


async def test_registration_from_a_real_agent_process(
        controller: RunningController, redis_url: str, tmp_path: Path) -> None:
    agent_url = await processes.enroll(controller.url, "pi-node-1")
    agent = processes.agent(agent_url, "pi-node-1", tmp_path / "agent.log", extra=[
        "--sysroot", str(fake_pi(tmp_path / "root"))], confined=False).start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        async def registered() -> dict[bytes, bytes]:
            return await client.hgetall(KEYS.node("pi-node-1"))  # type: ignore[no-any-return]

        node = await wait_until(registered, 15, what="registration")
        assert node[b"model"] == b"Raspberry Pi 4 Model B Rev 1.4"
        assert node[b"status"] == b"ready"
        assert node[b"gpio_backend"] == b"sim"
        assert node[b"source"] == b"agent"
        discovered = [e for e in await stream_events(redis_url)
                      if e.type == events.NODE_DISCOVERED and e.node_id == "pi-node-1"]
        assert [(e.data["source"], e.data["ip_address"]) for e in discovered] == [
            ("agent", "127.0.0.1")]
        before = await client.zscore(KEYS.heartbeats, "pi-node-1")
        assert before is not None

        async def later() -> bool:
            seen = await client.zscore(KEYS.heartbeats, "pi-node-1")
            return seen is not None and seen > before

        await wait_until(later, 10, what="a heartbeat, seen by the controller")
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0

        async def offline() -> bool:
            return await client.hget(KEYS.node("pi-node-1"), "status") == b"offline"

        await wait_until(offline, 10, what="the node to go offline")
        assert await client.zscore(KEYS.heartbeats, "pi-node-1") is None
    finally:
        agent.stop()
        await client.aclose()


async def test_outbox_keeps_order_through_an_outage_and_counts_what_it_drops(
        private_redis: RedisServer) -> None:
    redis = redis_client.connect(private_redis.url, retries=0)
    link = Link()
    outbox = Outbox(redis, KEYS, "pi-o", link, size=50)
    runner = asyncio.create_task(outbox.run())
    try:
        await redis.xgroup_create(KEYS.commands("pi-o"), AGENT_GROUP, id="0", mkstream=True)
        command = await redis.xadd(KEYS.commands("pi-o"), {b"c": b"x"})
        await redis.xreadgroup(AGENT_GROUP, "pi-o", {KEYS.commands("pi-o"): ">"})
        outbox.emit(reports.LogLine(level="info", message="before"), command)
        assert await outbox.drained(10)
        assert link.up

        def in_aof() -> bool:
            # With appendfsync everysec a busy Redis may postpone its AOF write by up to
            # 2 s after answering: a SIGKILL before then would lose the entry.
            return any(b"before" in f.read_bytes()
                       for f in private_redis.directory.rglob("*.aof*") if f.is_file())

        await wait_until(in_aof, 10, what="the report to reach the AOF file")
        private_redis.kill()
        for n in range(80):  # more than the outbox holds
            outbox.emit(reports.LogLine(level="info", message=f"during {n}"))
        await wait_until(lambda: not link.up, 10, what="the link to go down")
        private_redis.start()
        assert await outbox.drained(20)
        entries = await redis.xrange(KEYS.ingress("pi-o"))
        messages = [reports.decode(f[reports.REPORT_FIELD]).message  # type: ignore[union-attr]
                    for _, f in entries]
        # The first 30 of the outage were dropped (oldest first), the rest arrive in order,
        # and the loss is reported rather than silent.
        assert messages[0] == "before"
        assert [m for m in messages if m.startswith("during")] == [
            f"during {n}" for n in range(30, 80)]
        # The command was acknowledged together with the report that answered it.
        pending = await redis.xpending(KEYS.commands("pi-o"), AGENT_GROUP)
        assert pending["pending"] == 0
        assert outbox.dropped == 0  # reported and reset
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await redis.aclose()


async def test_secrets_never_reach_the_logs(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    secret_url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"  # nothing listens there
    agent = processes.agent(secret_url, "pi-x", tmp_path / "agent.log", confined=False).start()
    ctl = processes.controller(secret_url, tmp_path / "ctl.log").start()
    try:
        await wait_until(lambda: "not reachable" in ctl.log() or "unreachable" in ctl.log(),
                         20, what="the controller to complain")
        await wait_until(lambda: "pi-agent" in agent.log(), 20, what="the agent's start line")
    finally:
        agent.stop()
        ctl.stop()
    for log in (agent.log(), ctl.log()):
        assert "hunter2-secret" not in log
        assert processes.ADMIN_TOKEN not in log
    assert "***" in ctl.log()
