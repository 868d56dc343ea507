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
from typing import Final, Protocol

import msgspec

from common import events
from controller.subscription import Subscription
from controller.wsframes import PING_FRAME, close_frame, text_frame

logger = logging.getLogger(__name__)

CLOSE_SLOW: Final = 4008
KICK_GRACE_SECONDS: Final = 2.0
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

_json: Final = msgspec.json.Encoder()


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


class Transport(Protocol):
    """What the hub needs of a socket (asyncio.Transport fits; tests may pass their own)."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...


class Client:
    __slots__ = ("_abort", "backlog", "backlog_bytes", "buffered", "buffering", "closed",
                 "cut", "dropped", "hub", "last_id", "last_seen", "name", "slow",
                 "slow_since", "subscription", "transport")

    def __init__(self, hub: Hub, transport: Transport, subscription: Subscription,
                 name: str = "") -> None:
        self.hub = hub
        self.transport = transport
        self.subscription = subscription
        self.name = name
        self.buffering = False
        self.buffered: list[Outgoing] = []
        self.slow = False
        self.backlog: dict[str, Outgoing] = {}
        self.backlog_bytes = 0
        self.dropped = 0
        self.closed = False
        self.last_id: str | None = None
        self.last_seen = 0.0
        """Loop time the peer last sent anything (a pong counts): the heartbeat's yardstick."""
        self.slow_since = 0.0
        self.cut: tuple[int, int] | None = None
        self._abort: asyncio.TimerHandle | None = None

    def deliver(self, data: bytes, items: Sequence[Outgoing]) -> None:
        if self.closed:
            return
        if self.buffering:
            self.buffered.extend(items)
            return
        if self.slow or self.transport.get_write_buffer_size() > self.hub.soft_limit:
            self._coalesce(items)
            return
        try:
            self.transport.write(data)
        except RuntimeError:  # the socket closed under us; connection_lost will follow
            self.closed = True
            return
        self.last_id = items[-1].id

    def send(self, payload: bytes) -> None:
        """A server message of its own (ack, error, snapshot): framed and written in order."""
        self.send_raw(text_frame(payload))

    def send_raw(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.transport.write(data)
        except RuntimeError:
            self.closed = True

    def send_many(self, items: Sequence[Outgoing]) -> None:
        if items and not self.closed:
            self.send_raw(b"".join(item.frame for item in items))
            self.last_id = items[-1].id

    def _coalesce(self, items: Sequence[Outgoing]) -> None:
        if not self.slow:
            self.slow = True
            self.slow_since = asyncio.get_running_loop().time()
            self.hub.slow_clients.add(self)
        for item in items:
            key = item.coalesce_key
            replaced = self.backlog.get(key)
            if replaced is not None:
                self.dropped += 1
                self.backlog_bytes -= len(replaced.frame)
            self.backlog[key] = item
            self.backlog_bytes += len(item.frame)
        if (len(self.backlog) > self.hub.max_backlog or self.backlog_bytes
                + self.transport.get_write_buffer_size() > self.hub.hard_limit):
            self.kick(CLOSE_SLOW, f"slow consumer; resume with since={self.last_id or ''}")

    def flush_backlog(self) -> None:
        if not self.backlog or self.closed:
            self.slow = bool(self.backlog) and not self.closed
            return
        items = list(self.backlog.values())
        self.backlog.clear()
        self.backlog_bytes = 0
        if self.dropped:
            self.send(_json.encode({
                "type": "ws.coalesced", "dropped": self.dropped,
                "message": "you fell behind: only the latest state per key follows"}))
            self.dropped = 0
        self.send_many(items)
        self.slow = False

    def go_live(self, after: str | None) -> None:
        """End buffering (replay or snapshot done at ``after``): send what arrived meanwhile.

        The replay or snapshot may have read the stream further than the feed has: then
        this client keeps buffering until the feed passes ``after``, so an event the client
        already has is never sent again (Hub.advance releases it)."""
        self.cut = events.id_key(after) if after else None
        if self.cut is not None and self.hub.position < self.cut:
            self.hub.waiting.add(self)
            return
        self.release()

    def release(self) -> None:
        cut = self.cut
        items = [i for i in self.buffered if cut is None or events.id_key(i.id) > cut]
        self.buffered = []
        self.buffering = False
        self.cut = None
        self.send_many(items)

    def kick(self, code: int, reason: str) -> None:
        """Close without waiting on the peer: close frame now, abort if it does not go."""
        if self.closed:
            return
        self.closed = True
        logger.info("closing /ws client %s: %s", self.name or "?", reason)
        self.hub.kicked += 1
        with contextlib.suppress(Exception):  # the socket may be gone already; abort below
            self.transport.write(close_frame(code, reason))
            self.transport.close()  # flushes what is queued, then closes
        self._abort = asyncio.get_running_loop().call_later(
            KICK_GRACE_SECONDS, self.transport.abort)

    def cancel_timers(self) -> None:
        if self._abort is not None:
            self._abort.cancel()
            self._abort = None


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
        self.kicked = 0

    def __len__(self) -> int:
        return sum(len(members) for members in self._groups.values())

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
        client.cancel_timers()

    def resubscribe(self, client: Client, subscription: Subscription) -> None:
        self.remove(client)
        client.subscription = subscription
        self.add(client)

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
                if client.closed or client.transport.is_closing():
                    self.slow_clients.discard(client)
                elif client.transport.get_write_buffer_size() <= self.soft_limit // 2:
                    client.flush_backlog()
                    if not client.slow:
                        self.slow_clients.discard(client)
                elif now - client.slow_since > SLOW_TIMEOUT:
                    client.kick(CLOSE_SLOW, f"slow consumer; resume with since="
                                f"{client.last_id or ''}")

    async def heartbeat(self, interval: float) -> None:
        """Ping every client each interval; one that sent nothing for two intervals (not
        even a pong) is gone: drop it. One timer for all, not one per connection."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            deadline = loop.time() - 2 * interval
            for members in list(self._groups.values()):
                for client in list(members):
                    if client.closed:
                        continue
                    if client.last_seen < deadline:
                        logger.info("/ws client %s missed its pongs; dropping it", client.name)
                        client.closed = True
                        client.transport.abort()
                    else:
                        client.send_raw(PING_FRAME)

    def close_all(self, code: int, reason: str) -> None:
        for members in list(self._groups.values()):
            for client in list(members):
                client.kick(code, reason)
