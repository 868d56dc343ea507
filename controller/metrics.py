"""Prometheus metrics for ``GET /metrics`` (the exposition format, by prometheus_client).

Figures the hot paths already count (the hub's writes, the feed's reads) are read at scrape
time by a collector, so fan-out pays nothing for them; state that lives in Redis (nodes by
status, active jobs, Redis' answer time) is asked for when scraped. One registry per
application, so several controllers in one process (tests) do not share figures.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common import events

if TYPE_CHECKING:
    from controller.feed import Feed
    from controller.ws.hub import Hub

LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _LiveFigures(Collector):
    """What the hub and the feed count as they go, read when scraped."""

    def __init__(self, hub: Hub, feed: Feed) -> None:
        self._hub = hub
        self._feed = feed

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        hub, feed = self._hub, self._feed
        yield GaugeMetricFamily("pic_ws_clients", "/ws connections open", value=len(hub))
        yield GaugeMetricFamily("pic_ws_subscriptions",
                                "distinct /ws subscriptions (clients sharing a filter share one)",
                                value=hub.subscriptions())
        yield GaugeMetricFamily("pic_ws_slow_clients",
                                "/ws clients in coalesced delivery right now",
                                value=len(hub.slow_clients))
        yield CounterMetricFamily("pic_ws_closed_slow", "/ws clients closed as slow, or for "
                                  "breaking a limit or the protocol", value=hub.kicked)
        yield CounterMetricFamily("pic_events_published", "events handed to the hub",
                                  value=hub.published)
        yield CounterMetricFamily("pic_events_delivered",
                                  "event messages written to /ws clients", value=hub.delivered)
        yield CounterMetricFamily("pic_dead_letters", "stream entries that could not be "
                                  "decoded, set aside in the dead-letter stream",
                                  value=feed.dead_letters)
        yield CounterMetricFamily("pic_events_lost_in_failover", "times the event stream "
                                  "lost events this controller had delivered",
                                  value=feed.lost_events)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.events_read = Counter("pic_events_read", "events read from the stream, by type",
                                   ["type"], registry=self.registry)
        self.fanout_lag = Histogram("pic_fanout_lag_seconds", "from an event's stream id (when "
                                    "Redis took it) to its write to the /ws clients",
                                    buckets=LAG_BUCKETS, registry=self.registry)
        self.redis_ping = Gauge("pic_redis_ping_seconds", "how long Redis took to answer a PING "
                                "at the last scrape", registry=self.registry)
        self.nodes = Gauge("pic_nodes", "nodes by status", ["status"], registry=self.registry)
        self.jobs_active = Gauge("pic_jobs_active", "provisioning jobs queued or running",
                                 registry=self.registry)

    def watch(self, hub: Hub, feed: Feed) -> None:
        self.registry.register(_LiveFigures(hub, feed))

    def read(self, event: events.Event) -> None:
        self.events_read.labels(event.type).inc()

    def delivered(self, entry_id: str, now_ms: float) -> None:
        """A batch up to ``entry_id`` went out at ``now_ms`` (epoch milliseconds)."""
        self.fanout_lag.observe(max(0.0, (now_ms - events.id_key(entry_id)[0]) / 1000))

    def set_nodes(self, statuses: list[str | None]) -> None:
        self.nodes.clear()
        for status, count in Tally(s or "unknown" for s in statuses).items():
            self.nodes.labels(status).set(count)
