"""Catching a client up: replay after ``since``, or a snapshot, while its live events wait;
then live from the exact cut (no gap, no double)."""

from __future__ import annotations

from typing import Final

from common import events
from common.keys import EVENT_FIELD
from controller.feed import outgoing
from controller.store import Store
from controller.subscription import Subscription
from controller.ws import messages
from controller.ws.client import Client
from controller.ws.hub import Outgoing

REPLAY_PAGE: Final = 500
REPLAY_MAX: Final = 50_000
"""More missed events than this and the client is told to re-read state (ws.resync)."""


class CatchUp:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def run(self, client: Client, since: str | None, snapshot: bool) -> None:
        """Replay or snapshot while live events buffer, then go live from the cut."""
        client.begin_catch_up()
        cut: str | None = None
        if snapshot:
            cut = await self.snapshot(client)
        elif since is not None:
            cut = await self.replay(client, since)
        client.go_live(cut)

    async def replay(self, client: Client, since: str) -> str | None:
        log = self._store.events
        info = await log.info()
        if info.resync_needed(since):
            client.send(messages.resync(since, "events after this id are not kept (or it lies "
                                               "beyond the newest event); re-read state and "
                                               "resume from the next event"))
            return None
        if since != "0-0" and not await log.holds(since):
            # Every id we send stays in the stream until trimmed (checked above): this one
            # was lost in a failover, or never existed. A replay from it could skip events.
            client.send(messages.resync(since, "this id is not in the event stream (lost in "
                                               "a failover?); re-read state"))
            return None
        position, sent = since, 0
        while not client.closed:
            page = await log.page(after=position, count=REPLAY_PAGE)
            if not page:
                return position
            batch: list[Outgoing] = []
            for raw_id, fields in page:
                entry_id = raw_id.decode()
                try:
                    event = events.decode(fields[EVENT_FIELD], entry_id)
                except Exception:  # noqa: BLE001 - dead-lettered by the feed; skip here
                    continue
                if client.subscription.matches(event.type, event.node_id, event.cluster_id,
                                               event.resource):
                    batch.append(outgoing(entry_id, event))
            client.send_many(batch)
            position = page[-1][0].decode()
            sent += len(page)
            if sent > REPLAY_MAX:
                client.send(messages.resync(since, "too many missed events to replay; "
                                                   "re-read state"))
                return None
            await client.wait_for_room()
        return None

    async def snapshot(self, client: Client) -> str:
        snap = await self._store.events.snapshot()
        sub = client.subscription
        in_scope = snapshot_scope(sub)
        parts: list[bytes] = []
        if "node" in in_scope:
            parts += [messages.node_snapshot(node.id, node) for node in snap.nodes
                      if not sub.nodes or node.id in sub.nodes]
        if "gpio" in in_scope:
            parts += [messages.gpio_snapshot(pin.metadata.name, pin.spec.node_name, pin)
                      for pin in snap.pins
                      if (not sub.nodes or pin.spec.node_name in sub.nodes)
                      and (not sub.resources or pin.metadata.name in sub.resources)]
        if "cluster" in in_scope:
            parts += [messages.cluster_snapshot(cluster_id, cluster)
                      for cluster_id, cluster in snap.clusters.items()
                      if not sub.clusters or cluster_id in sub.clusters]
        count = len(parts)
        parts.append(messages.snapshot_end(snap.last_id, count))
        # All at once: each part counts against the client's hard limit, and another
        # snapshot is refused while this one is still queued (Client.snapshot_queued).
        for part in parts:
            client.send(part)
        client.snapshot_sent()
        return snap.last_id


def snapshot_scope(sub: Subscription) -> set[str]:
    categories = {"node", "gpio", "cluster"}
    if not sub.types:
        return categories
    return {c for c in categories if any(t.split(".", 1)[0] in (c, "*") or t.startswith("*")
                                         for t in sub.types)}
