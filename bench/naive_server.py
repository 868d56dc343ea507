"""The naive fan-out baseline: what a first aiohttp version of /ws looks like.

It reads the product's stream (``pic:events``, field ``e``, the msgpack envelope of
``common.events``), decodes each event once, then for every client in turn JSON-encodes the
event again (``json.dumps``) and awaits ``send_str``: one slow socket holds up everyone
behind it. ``/ws`` requires ``Authorization: Bearer <PIC_ADMIN_TOKEN>``. For comparison only.

    python bench/naive_server.py --redis-url redis://127.0.0.1:6390/0 --port 8082
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from common import events

CLIENTS = web.AppKey("clients", set[web.WebSocketResponse])
TASK = web.AppKey("feed", asyncio.Task[None])


async def ws_handler(request: web.Request) -> web.StreamResponse:
    token = os.environ.get("PIC_ADMIN_TOKEN", "")
    if request.headers.get("Authorization") != f"Bearer {token}":
        raise web.HTTPUnauthorized(text="bearer token required")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request.app[CLIENTS].add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        request.app[CLIENTS].discard(ws)
    return ws


async def feed(redis_url: str, stream: str, clients: set[web.WebSocketResponse]) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    position = "$"
    try:
        while True:
            reply = await redis.xread({stream: position}, count=500, block=1000)
            if not reply:
                continue
            for raw_id, fields in reply[0][1]:
                position = raw_id.decode()
                event = msgspec.to_builtins(events.decode(fields[b"e"], position))
                for ws in list(clients):
                    with contextlib.suppress(ConnectionError):
                        await ws.send_str(json.dumps(event))
    finally:
        await redis.aclose()


def create_app(redis_url: str, stream: str) -> web.Application:
    app = web.Application()
    app[CLIENTS] = set()

    async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
        app[TASK] = asyncio.create_task(feed(redis_url, stream, app[CLIENTS]), name="feed")
        yield
        app[TASK].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[TASK]

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "clients": len(request.app[CLIENTS])})

    app.cleanup_ctx.append(feed_ctx)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/readyz", readyz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stream", default="pic:events")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    args = parser.parse_args()
    web.run_app(create_app(args.redis_url, args.stream), host=args.host, port=args.port,
                backlog=4096, access_log=None, print=None)


if __name__ == "__main__":
    main()
