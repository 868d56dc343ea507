"""``pi-controller events``: print the event history, and follow /ws live, from a terminal."""

from __future__ import annotations

import asyncio
import sys
from typing import Final
from urllib.parse import urlencode, urljoin

import aiohttp

FINAL_CLOSES: Final = {4400: 2, 4401: 1, 1002: 1, 1007: 1, 1009: 1}
"""Close codes that retrying cannot cure, and the exit code for each (a bad filter is a
usage error, 2); the others (shutdown, slow consumer) resume with ``since``."""


async def follow(url: str, token: str, *, types: str = "", node: str = "", since: str = "",
                 follow_live: bool = True, limit: int = 20) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    query = {k: v for k, v in (("types", types), ("node", node)) if v}
    async with aiohttp.ClientSession(headers=headers) as session:
        if not follow_live:
            params = {**query, "limit": str(limit), **({"since": since} if since else {})}
            try:
                async with session.get(urljoin(url, "api/v1/events"),
                                       params=params) as response:
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, ValueError) as err:
                print(f"error: cannot read events from {url}: {err}", file=sys.stderr)
                return 1
            if response.status != 200:
                print(f"error {response.status}: {body.get('message')}", file=sys.stderr)
                return 1
            for item in body["items"]:
                print(_line(item), flush=True)
            return 0
        position = since
        while True:
            params = {**query, **({"since": position} if position else {})}
            ws_url = urljoin(url.replace("http", "ws", 1), "ws") + (
                "?" + urlencode(params) if params else "")
            try:
                async with session.ws_connect(ws_url, heartbeat=30) as ws:
                    print(f"# connected to {ws_url}", file=sys.stderr, flush=True)
                    reason = ""
                    while True:
                        msg = await ws.receive()
                        if msg.type == aiohttp.WSMsgType.CLOSE:
                            reason = str(msg.extra or "")
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        item = msg.json()
                        if "id" in item and not item["type"].startswith("ws."):
                            position = item["id"]
                        print(_line(item), flush=True)
                    final = FINAL_CLOSES.get(ws.close_code or 0)
                    if final is not None:  # retrying would be refused the same way
                        print(f"error: the server closed the stream ({ws.close_code}): "
                              f"{reason or 'no reason given'}", file=sys.stderr)
                        return final
                    print(f"# closed ({ws.close_code}); resuming", file=sys.stderr, flush=True)
            except aiohttp.WSServerHandshakeError as err:
                print(f"error {err.status}: {err.message}", file=sys.stderr)
                if err.status in (401, 403):
                    return 1
            except aiohttp.ClientError as err:
                print(f"# {err}; retrying", file=sys.stderr, flush=True)
            await asyncio.sleep(1.0)


def _line(item: dict[str, object]) -> str:
    import json

    return json.dumps(item, separators=(",", ":"))
