"""GPIO writes compute the new resource from the current one under WATCH: concurrent changes
never overwrite each other, and ``metadata.generation`` is a precondition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from common import reports
from common.keys import Keys
from tests.conftest import RunningController
from tests.support import processes
from tests.support.waiting import wait_until

KEYS = Keys()


@pytest.fixture
async def led(controller: RunningController, redis_url: str,
              http: aiohttp.ClientSession) -> AsyncIterator[str]:
    """A node registered by its own agent's report, with one output resource."""
    agent = aioredis.Redis.from_url(await processes.enroll(controller.url, "pi-g"))
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await agent.xadd(KEYS.ingress("pi-g"), {reports.REPORT_FIELD: reports.encode(
            reports.Started(facts=reports.NodeFacts(
                node_id="pi-g", hostname="pi-g", ip_address="127.0.0.1", model="m",
                arch="aarch64", os="o", kernel="k")))})
        await agent.publish(KEYS.ring("pi-g"), b"")
        await wait_until(lambda: admin.sismember(KEYS.nodes, "pi-g"), 10, what="pi-g")
        async with http.post(f"{controller.url}/api/v1/gpio", json={
                "apiVersion": "hardware.pi-controller.io/v1", "kind": "GPIOPin",
                "metadata": {"name": "led-1"},
                "spec": {"nodeName": "pi-g", "pin": 18, "mode": "output", "state": "low"}}
                ) as response:
            assert response.status == 201, await response.text()
        yield f"{controller.url}/api/v1/gpio/led-1"
    finally:
        await agent.aclose()
        await admin.aclose()


async def test_concurrent_patches_of_different_fields_all_survive(
        led: str, http: aiohttp.ClientSession) -> None:
    rounds = 15

    async def patch(body: dict[str, object]) -> int:
        async with http.patch(led, json=body) as response:
            return response.status

    for i in range(rounds):
        statuses = await asyncio.gather(
            patch({"metadata": {"labels": {f"label-{i}": "x"}}}),
            patch({"metadata": {"annotations": {f"note-{i}": "y"}}}),
            patch({"spec": {"state": "high" if i % 2 else "low"}}))
        assert statuses == [200, 200, 200]
    async with http.get(led) as response:
        resource = await response.json()
    assert set(resource["metadata"]["labels"]) == {f"label-{i}" for i in range(rounds)}
    assert set(resource["metadata"]["annotations"]) == {f"note-{i}" for i in range(rounds)}
    # Every accepted change made exactly one generation.
    assert resource["metadata"]["generation"] == 1 + 3 * rounds


async def test_generation_is_a_precondition(led: str, http: aiohttp.ClientSession) -> None:
    async with http.get(led) as response:
        current = await response.json()
    generation = current["metadata"]["generation"]
    async with http.patch(led, json={"metadata": {"generation": generation},
                                     "spec": {"state": "high"}}) as response:
        assert response.status == 200
        assert (await response.json())["metadata"]["generation"] == generation + 1
    # A second writer still holding the old generation is refused, and told why.
    async with http.patch(led, json={"metadata": {"generation": generation},
                                     "spec": {"state": "low"}}) as response:
        assert response.status == 409
        body = await response.json()
        assert body["field"] == "metadata.generation"
        assert f"generation {generation + 1}, not {generation}" in body["reason"]
    stale_put = {**current, "spec": {**current["spec"], "state": "low"}}
    stale_put.pop("status", None)
    async with http.put(led, json=stale_put) as response:
        assert response.status == 409
        assert (await response.json())["field"] == "metadata.generation"
    async with http.patch(led, json={"metadata": {"generation": "2"}}) as response:
        assert response.status == 422
        assert (await response.json())["field"] == "metadata.generation"
    async with http.get(led) as response:
        after = await response.json()
    assert after["spec"]["state"] == "high"
    assert after["metadata"]["generation"] == generation + 1
