"""/metrics after real traffic: parsed with the Prometheus client's own parser, values that
move, who may scrape, and a Grafana dashboard that names only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from common import events
from common.keys import EVENT_FIELD, Keys
from tests.conftest import RunningController, running_controller
from tests.support.wsclient import WsRecorder

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "pi-controller.json"


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every sample as ``name{label="value",...}`` -> value."""
    async with http.get(f"{url}/metrics") as reply:
        assert reply.status == 200, await reply.text()
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        text = await reply.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_figures_move_with_real_traffic(controller: RunningController,
                                              http: aiohttp.ClientSession,
                                              rds: aioredis.Redis) -> None:
    before = await scrape(http, controller.url)
    assert before["pic_ws_clients"] == 0
    assert before["process_resident_memory_bytes"] > 0
    async with http.post(f"{controller.url}/api/v1/nodes",
                         json={"address": "127.0.0.1", "name": "pi-m"}) as reply:
        assert reply.status == 201
    async with WsRecorder(http, controller.ws_url) as first, \
            WsRecorder(http, controller.ws_url) as second:
        ids = [(await rds.xadd(Keys().events, {EVENT_FIELD: events.encode(
            events.node_status_changed("pi-m", "ready"))})).decode() for _ in range(5)]
        for ws in (first, second):
            await ws.wait_for(lambda m: m.get("id") == ids[-1], 10, "the events")
        during = await scrape(http, controller.url)
    assert during["pic_ws_clients"] == 2 and during["pic_ws_subscriptions"] == 1
    read = 'pic_events_read_total{type="node.status.changed"}'
    assert during[read] - before.get(read, 0) >= 5
    assert during["pic_events_delivered_total"] - before["pic_events_delivered_total"] >= 10
    assert during["pic_fanout_lag_seconds_count"] > before.get("pic_fanout_lag_seconds_count", 0)
    assert 0 < during["pic_redis_ping_seconds"] < 1
    assert during['pic_nodes{status="discovered"}'] == 1
    assert during["pic_jobs_active"] == 0


async def test_openmetrics_when_asked(controller: RunningController,
                                      http: aiohttp.ClientSession) -> None:
    async with http.get(f"{controller.url}/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0"}) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await reply.text()).rstrip().endswith("# EOF")


async def test_who_may_scrape(redis_url: str) -> None:
    async with running_controller(redis_url) as controller, \
            aiohttp.ClientSession() as client, client.get(f"{controller.url}/metrics") as reply:
        assert reply.status == 401
    async with running_controller(redis_url, metrics_allow=["127.0.0.0/8"]) as controller, \
            aiohttp.ClientSession() as client, client.get(f"{controller.url}/metrics") as reply:
        assert reply.status == 200
        assert "pic_ws_clients" in await reply.text()


async def test_the_dashboard_queries_only_metrics_that_exist(
        controller: RunningController, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{controller.url}/metrics") as reply:
        families = list(text_string_to_metric_families(await reply.text()))
    # A family is declared (HELP, TYPE) even before it has samples.
    exposed = {f.name + suffix for f in families
               for suffix in (("_total",) if f.type == "counter" else
                              ("_bucket", "_count", "_sum") if f.type == "histogram" else ("",))}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    named = {n for q in queries for n in re.findall(r"\b(?:pic|process)_[a-z_]+", q)}
    assert named and named <= exposed, named - exposed
