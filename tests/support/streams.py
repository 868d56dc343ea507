"""Read the events stream straight from Redis: the truth a test checks clients against."""

from __future__ import annotations

import redis.asyncio as aioredis

from common import events
from common.keys import EVENT_FIELD, Keys


async def stream_events(url: str) -> list[events.Event]:
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange(Keys().events)
    finally:
        await client.aclose()
    return [events.decode(fields[EVENT_FIELD], raw_id.decode()) for raw_id, fields in entries]
