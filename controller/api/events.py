"""/api/v1/events: history from the stream, filtered like /ws."""

from __future__ import annotations

from aiohttp import web

from common import events
from common.keys import EVENT_FIELD
from controller import appkeys
from controller.api.errors import json_response, parse_limit
from controller.api.frontdoor import accepts
from controller.store import Store
from controller.subscription import Subscription, parse_since

routes = web.RouteTableDef()
MAX_LIMIT = 1000
PAGE = 2_000
"""Entries one round looks at, at most, inside Redis (only matches are sent back); small
enough that a round holds Redis up for about 2 ms."""


@routes.get("/api/v1/events")
@accepts("types", "node", "cluster", "resource", "since", "limit")
async def list_events(request: web.Request) -> web.Response:
    query = request.query
    since = parse_since(query.get("since"))
    limit = parse_limit(query.get("limit"), MAX_LIMIT)
    subscription = Subscription.parse(types=query.get("types"), node=query.get("node"),
                                      cluster=query.get("cluster"),
                                      resource=query.get("resource"))
    store = request.app[appkeys.STORE]
    if since is None:
        # The latest `limit` matching events, read newest first, returned oldest first.
        items = (await _matching(store, subscription, limit, newest_first=True))[::-1]
    else:
        items = await _matching(store, subscription, limit, after=since)
    last = items[-1].id if items else since
    return json_response({"items": items, "count": len(items), "last_id": last})


async def _matching(store: Store, subscription: Subscription, limit: int, *,
                    after: str | None = None, newest_first: bool = False) -> list[events.Event]:
    """Up to ``limit`` events the subscription matches, reading the stream in pages of
    PAGE whatever ``limit`` is (a rare type must not cost a round trip per entry), and
    decoding only entries whose bytes can match."""
    items: list[events.Event] = []
    position: str | None = "+" if newest_first else (after or "0-0")
    count = limit
    while position is not None and len(items) < limit:
        page, position = await store.events.scan(
            position=position, newest_first=newest_first, count=count,
            needles=subscription.needles, want=limit - len(items))
        for raw_id, fields in page:
            event = _decode(raw_id, fields)
            if event and subscription.matches(event.type, event.node_id, event.cluster_id,
                                              event.resource):
                items.append(event)
        count = min(count * 4, PAGE)  # a rare match: read further each round
    return items[:limit]


def _decode(raw_id: bytes, fields: dict[bytes, bytes]) -> events.Event | None:
    try:
        return events.decode(fields[EVENT_FIELD], raw_id.decode())
    except Exception:  # noqa: BLE001 - dead-lettered entries are not history
        return None
