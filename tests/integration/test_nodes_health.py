"""Health reports from a real agent (reading a fake Pi's /sys), thresholds raising warnings
once and recoveries once, metrics history over REST, and the node admin API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from common import events
from common.keys import EVENT_FIELD, Keys
from tests.conftest import RunningController
from tests.support import processes
from tests.support.streams import stream_events as stream
from tests.support.waiting import wait_until

THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"


def fake_pi(root: Path, temp_millic: int, throttled: str) -> None:
    zone = root / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text(f"{temp_millic}\n")
    (root / THROTTLED).parent.mkdir(parents=True, exist_ok=True)
    (root / THROTTLED).write_text(f"{throttled}\n")
    model = root / "sys/firmware/devicetree/base/model"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    if not (root / "proc").exists():
        os.symlink("/proc", root / "proc")



def health_logs(found: list[events.Event], node_id: str) -> list[tuple[str, str]]:
    return [(e.data["level"], e.data["message"]) for e in found
            if e.type == events.SYSTEM_LOG_CREATED and e.data.get("source") == "health"
            and e.node_id == node_id]


async def test_thresholds_warn_once_and_recover_once(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    fake_pi(root, 85_123, "50005")  # hot, under-voltage now, throttled now (+ occurred)
    pi = processes.agent(redis_url, "pi-hot", tmp_path / "agent.log", extra=[
        "--sysroot", str(root), "--health-interval", "0.1"]).start()
    try:
        async def metrics(count: int) -> list[dict[str, Any]] | None:
            async with http.get(f"{controller.url}/api/v1/nodes/pi-hot/metrics") as response:
                if response.status != 200:
                    return None
                items: list[dict[str, Any]] = (await response.json())["items"]
            return items if len(items) >= count else None

        items = await wait_until(lambda: metrics(5), 15, what="five health reports")
        latest = items[0]
        assert latest["cpu_temp_c"] == 85.1
        assert latest["under_voltage"] is True and latest["throttled"] is True
        assert latest["freq_capped"] is False
        assert latest["under_voltage_occurred"] is True
        assert latest["throttled_flags"] == "0x50005"
        assert 0 < latest["memory_percent"] < 100
        assert latest["memory_total_bytes"] > 0 and latest["uptime_s"] > 0
        assert latest["load_1"] is not None and latest["disk_percent"] is not None
        assert items[0]["time"] >= items[1]["time"]  # newest first

        async def warned() -> bool:
            return len(health_logs(await stream(redis_url), "pi-hot")) >= 3

        await wait_until(warned, 10, what="three warnings")
        await wait_until(lambda: metrics(15), 15, what="more reports while still hot")
        logs = health_logs(await stream(redis_url), "pi-hot")
        assert sorted(level for level, _ in logs) == ["warning"] * 3, logs
        assert any("85.1 C" in m for _, m in logs)
        assert any("under-voltage" in m for _, m in logs)

        # Cooler but inside the hysteresis band: still no recovery for the temperature.
        fake_pi(root, 77_000, "50000")  # only "occurred" bits left

        async def two_recoveries() -> bool:
            logs = health_logs(await stream(redis_url), "pi-hot")
            return sum(1 for level, _ in logs if level == "info") >= 2

        await wait_until(two_recoveries, 10, what="under-voltage and throttling cleared")
        await wait_until(lambda: metrics(30), 15, what="reports in the hysteresis band")
        logs = health_logs(await stream(redis_url), "pi-hot")
        assert not any("temperature back" in m for _, m in logs)
        fake_pi(root, 60_000, "50000")

        async def cooled() -> bool:
            return any("temperature back to 60.0" in m
                       for _, m in health_logs(await stream(redis_url), "pi-hot"))

        await wait_until(cooled, 10, what="temperature recovery")
        await wait_until(lambda: metrics(45), 15, what="reports after recovery")
        logs = health_logs(await stream(redis_url), "pi-hot")
        assert [level for level, _ in logs] == ["warning"] * 3 + ["info"] * 3, logs
    finally:
        pi.stop()


async def test_reports_from_unknown_nodes_are_refused(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{controller.url}/api/v1/nodes/ghost/metrics") as response:
        assert response.status == 404
        body = await response.json()
    assert body["error"] == "not_found" and body["field"] == "node"
    client = aioredis.Redis.from_url(redis_url)
    keys = Keys()
    hot = events.node_health_reported("ghost", {"cpu_temp_c": 99.0, "under_voltage": True})
    marker = events.system_log_created("info", "marker")
    for event in (hot, marker):
        await client.xadd(keys.events, {EVENT_FIELD: events.encode(event)})
    await client.aclose()

    async def marker_seen() -> bool:
        return any(e.data.get("message") == "marker" for e in await stream(redis_url))

    await wait_until(marker_seen, 5)
    async with http.get(f"{controller.url}/api/v1/nodes/pi-1/metrics?limit=0") as response:
        assert response.status == 422
    assert health_logs(await stream(redis_url), "ghost") == []


async def test_labels_maintenance_and_delete(
        controller: RunningController, redis_url: str, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    base = f"{controller.url}/api/v1/nodes"
    pi = processes.agent(redis_url, "pi-m", tmp_path / "agent.log").start()
    try:
        async def ready() -> bool:
            async with http.get(f"{base}/pi-m") as response:
                return response.status == 200 and (await response.json())["status"] == "ready"

        await wait_until(ready, 10, what="pi-m ready")
        async with http.put(f"{base}/pi-m", json={"labels": {"zone": "garage",
                                                             "pi.io/role": "worker"}}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["labels"] == {"zone": "garage", "pi.io/role": "worker"}
        for bad, field in (({"labels": {"bad key!": "x"}}, "labels.bad key!"),
                           ({"labels": {"zone": 5}}, "labels.zone"),
                           ({"maintenance": "yes"}, "maintenance"),
                           ({"status": "ready"}, "status")):
            async with http.put(f"{base}/pi-m", json=bad) as r:
                assert r.status == 422, bad
                assert (await r.json())["field"] == field
        async with http.put(f"{base}/pi-m", json={"maintenance": True}) as r:
            body = await r.json()
        assert body["status"] == "maintenance" and body["maintenance"] is True
        async with http.put(f"{base}/pi-m", json={"maintenance": False}) as r:
            body = await r.json()
        assert body["status"] == "ready" and body.get("maintenance", False) is False
        statuses = [(e.data.get("previous_status"), e.data["status"])
                    for e in await stream(redis_url)
                    if e.type == events.NODE_STATUS_CHANGED and e.node_id == "pi-m"]
        assert statuses[-2:] == [("ready", "maintenance"), ("maintenance", "ready")]
        async with http.put(f"{base}/nobody", json={"maintenance": True}) as r:
            assert r.status == 404

        async with http.delete(f"{base}/pi-m") as r:
            assert r.status == 204
        async with http.get(f"{base}/pi-m") as r:
            assert r.status == 404
        async with http.delete(f"{base}/pi-m") as r:
            assert r.status == 404
        removed = [e for e in await stream(redis_url) if e.type == events.NODE_REMOVED]
        assert [e.node_id for e in removed] == ["pi-m"]
        client = aioredis.Redis.from_url(redis_url)
        # Its heartbeat entry went with it (a still-running agent may beat again, but the
        # node stays forgotten: it is not in the index).
        assert not await client.sismember(Keys().nodes, "pi-m")
        await client.aclose()
    finally:
        pi.stop()


async def test_registration_input_errors(controller: RunningController,
                                         http: aiohttp.ClientSession) -> None:
    base = f"{controller.url}/api/v1/nodes"
    for body, field in (({}, "address"), ({"address": 5}, "address"),
                        ({"address": "not an address!"}, "address"),
                        ({"address": "10.0.0.1", "name": "Bad_Name"}, "name")):
        async with http.post(base, json=body) as r:
            assert r.status == 422, body
            assert (await r.json())["field"] == field
    async with http.post(base, data=b"{nope", headers={"Content-Type": "application/json"}
                         ) as r:
        assert r.status == 400
