"""Fan-out of events to /ws clients: decided once per filter, encoded once, one write each.

The feed hands the hub a batch of events. Clients are grouped by subscription; for each
group the hub decides once which events match and joins their pre-built WebSocket frames
into one buffer, which each member gets in a single ``transport.write``. Nothing awaits a
client's socket: a client whose kernel buffer and transport backlog grow past the soft limit
is switched to coalesced delivery (latest state per key), and past the hard limit it is
closed with 4008 and may resume with ``since``. Other clients never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from common import events
from controller.subscription import Subscription
from controller.ws.codes import CloseCode

if TYPE_CHECKING:
    from controller.ws.client import Client

logger = logging.getLogger(__name__)

DRAIN_INTERVAL: Final = 0.05
SLOW_TIMEOUT: Final = 30.0
"""Seconds a client may stay behind (its socket not draining) before it is closed, even if
coalescing keeps its backlog small: a client that stopped reading must not linger."""

STATE_KEYS: Final[dict[str, str]] = {
    "gpio.state.changed": "resource",
    "node.status.changed": "node_id",
    "node.health.reported": "node_id",
    "job.step.changed": "node_id",
}
"""State-like event types, by the subject key whose latest value is all a slow client needs."""

@dataclass(slots=True)
class Outgoing:
    """One event as the hub sees it: its routing keys and its finished frame."""

    id: str
    type: str
    node_id: str | None
    cluster_id: str | None
    resource: str | None
    frame: bytes

    @property
    def coalesce_key(self) -> str:
        subject = STATE_KEYS.get(self.type)
        if subject is None:
            return self.id
        return f"{self.type}/{getattr(self, subject)}"


class Hub:
    def __init__(self, *, soft_limit: int, hard_limit: int, max_backlog: int = 10_000) -> None:
        self.soft_limit = soft_limit
        self.hard_limit = hard_limit
        self.max_backlog = max_backlog
        self._groups: dict[Subscription, list[Client]] = {}
        self.slow_clients: set[Client] = set()
        self.waiting: set[Client] = set()
        """Clients whose catch-up read past the feed: they go live when it catches up."""
        self.position: tuple[int, int] = (0, 0)
        """The last stream id the feed has handed over (or started after)."""
        self.published = 0
        self.delivered = 0
        """Event messages handed to clients' sockets (or their backlogs)."""
        self.kicked = 0

    def __len__(self) -> int:
        return sum(len(members) for members in self._groups.values())

    def subscriptions(self) -> int:
        return len(self._groups)

    def clients(self) -> list[Client]:
        return [client for members in self._groups.values() for client in members]

    def add(self, client: Client) -> None:
        self._groups.setdefault(client.subscription, []).append(client)

    def remove(self, client: Client) -> None:
        members = self._groups.get(client.subscription)
        if members is not None:
            with contextlib.suppress(ValueError):
                members.remove(client)
            if not members:
                del self._groups[client.subscription]
        self.slow_clients.discard(client)
        self.waiting.discard(client)

    def publish(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        self.published += len(items)
        everything: bytes | None = None
        for subscription, members in self._groups.items():
            if subscription.everything:
                matched: Sequence[Outgoing] = items
                if everything is None:
                    everything = items[0].frame if len(items) == 1 else b"".join(
                        i.frame for i in items)
                data = everything
            else:
                matched = [i for i in items if subscription.matches(
                    i.type, i.node_id, i.cluster_id, i.resource)]
                if not matched:
                    continue
                data = matched[0].frame if len(matched) == 1 else b"".join(
                    i.frame for i in matched)
            for client in members:
                client.deliver(data, matched)
            self.delivered += len(matched) * len(members)

    def advance(self, position: str) -> None:
        """The feed has handed over everything up to ``position``."""
        self.position = events.id_key(position)
        if self.waiting:
            for client in [c for c in self.waiting if c.cut is None or c.cut <= self.position]:
                self.waiting.discard(client)
                client.release()

    async def drain_slow_clients(self) -> None:
        """Give slow clients their coalesced backlog once their socket has room again; close
        those that stay behind for SLOW_TIMEOUT."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(DRAIN_INTERVAL)
            now = loop.time()
            for client in list(self.slow_clients):
                behind_since = client.behind_since()
                if client.closed or behind_since is None:
                    self.slow_clients.discard(client)
                elif client.transport.get_write_buffer_size() <= self.soft_limit // 2:
                    client.flush_backlog()
                    if not client.slow:
                        self.slow_clients.discard(client)
                elif now - behind_since > SLOW_TIMEOUT:
                    client.kick_slow()

    async def heartbeat(self, interval: float) -> None:
        """Ping every client each interval; one that sent nothing for two intervals (not
        even a pong) is gone: drop it. One timer for all, not one per connection."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            deadline = loop.time() - 2 * interval
            for client in self.clients():
                if client.closed:
                    continue
                if client.last_seen < deadline:
                    client.drop("missed its pongs")
                else:
                    client.ping()

    def resync_all(self, reason: str) -> None:
        for client in self.clients():
            client.resync(reason)

    def close_all(self, code: CloseCode, reason: str) -> None:
        for client in self.clients():
            client.kick(code, reason)
