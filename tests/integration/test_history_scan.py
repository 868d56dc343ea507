"""The filtered history read inside Redis never drops an event that matches, and skips
what cannot."""

from __future__ import annotations

import redis.asyncio as aioredis

from common import events as ev
from common.keys import EVENT_FIELD, Keys
from controller.store import Store
from controller.subscription import Subscription


async def test_the_scan_keeps_every_match_and_only_candidates(rds: aioredis.Redis) -> None:
    store = Store(rds, Keys(), stream_maxlen=1000)
    samples = [ev.gpio_state_changed("led-1", "pi-1", 18, "high"),
               ev.node_status_changed("pi-10", "ready"),
               ev.cluster_node_added("lab", "pi-2"),
               ev.system_log_created("warning", "hot", node_id="pi-1"),
               ev.node_discovered("pi-3", "10.0.0.3")] * 3
    ids = [(await rds.xadd(Keys().events, {EVENT_FIELD: ev.encode(e)})).decode()
           for e in samples]
    filters = [{}, {"types": "gpio.*"}, {"types": "node.status.changed"}, {"node": "pi-1"},
               {"cluster": "lab"}, {"resource": "led-1"},
               {"types": "node.*", "node": "pi-10,pi-3"}, {"types": "*.changed"}]
    for spec in filters:
        sub = Subscription.parse(**spec)
        wanted = [i for i, e in zip(ids, samples, strict=True)
                  if sub.matches(e.type, e.node_id, e.cluster_id, e.resource)]
        for newest_first in (True, False):
            found, position = await store.events.scan(
                position="+" if newest_first else "0-0", newest_first=newest_first,
                count=100, needles=sub.needles, want=100)
            got = [raw_id.decode() for raw_id, _ in found]
            assert set(wanted) <= set(got), (spec, newest_first)
            assert got == sorted(got, key=ev.id_key, reverse=newest_first)
            assert position is None  # the whole stream was read
    only_gpio, _ = await store.events.scan(position="+", newest_first=True, count=100,
                                           needles=Subscription.parse(types="gpio.*").needles,
                                           want=100)
    assert len(only_gpio) == 3
    first, position = await store.events.scan(position="+", newest_first=True, count=100,
                                              needles=(), want=2)
    assert [i.decode() for i, _ in first] == ids[::-1][:2] and position == ids[-2]
