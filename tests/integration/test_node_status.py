"""Status transitions are compare-and-set: racing writers announce a transition once."""

from __future__ import annotations

import asyncio

import pytest

from common import events
from common.keys import EVENT_FIELD, Keys
from common.redis_client import connect
from controller.store import Store


async def status_events(store: Store, node_id: str) -> list[events.Event]:
    entries = await store.events.page(count=10_000)
    decoded = [events.decode(f[EVENT_FIELD], i.decode()) for i, f in entries]
    return [e for e in decoded if e.type == events.NODE_STATUS_CHANGED and e.node_id == node_id]


async def test_racing_writers_emit_one_transition(redis_url: str) -> None:
    redis = connect(redis_url)
    store = Store(redis, Keys(), stream_maxlen=1000)
    await redis.hset(store.keys.node("pi-1"), mapping={"status": "ready"})
    await redis.sadd(store.keys.nodes, "pi-1")
    results = await asyncio.gather(*(
        store.nodes.transition("pi-1", "offline", "missed heartbeats", expected={"ready"})
        for _ in range(10)))
    assert results.count(True) == 1
    found = await status_events(store, "pi-1")
    assert [(e.data["previous_status"], e.data["status"]) for e in found] == [
        ("ready", "offline")]
    assert found[0].data["reason"] == "missed heartbeats"
    # Not in the expected state: nothing happens.
    assert not await store.nodes.transition("pi-1", "ready", "beats", expected={"maintenance"})
    assert await store.nodes.transition("pi-1", "ready", "heartbeats resumed")
    assert len(await status_events(store, "pi-1")) == 2
    await redis.aclose()


async def test_unknown_node_and_status_are_refused(redis_url: str) -> None:
    redis = connect(redis_url)
    store = Store(redis, Keys(), stream_maxlen=1000)
    assert not await store.nodes.transition("ghost", "ready", "x")
    assert await redis.exists(store.keys.node("ghost")) == 0
    with pytest.raises(ValueError, match="unknown node status"):
        await store.nodes.transition("ghost", "sleeping", "x")
    await redis.aclose()


async def test_liveness_does_not_blame_nodes_for_its_own_stall(redis_url: str) -> None:
    import time

    from controller.liveness import Liveness

    redis = connect(redis_url)
    store = Store(redis, Keys(), stream_maxlen=1000)
    await redis.hset(store.keys.node("pi-1"), mapping={"status": "ready"})
    await redis.sadd(store.keys.nodes, "pi-1")
    await redis.zadd(store.keys.heartbeats, {"pi-1": time.time() - 60})
    liveness = Liveness(store, heartbeat_interval=1.0, missed_heartbeats=3)
    liveness._last_check = time.monotonic() - 30  # as if this process had been paused
    await liveness.check()
    assert await status_events(store, "pi-1") == []
    await liveness.check()  # the next, timely tick judges
    found = await status_events(store, "pi-1")
    assert [e.data["status"] for e in found] == ["offline"]
    await redis.aclose()
