"""``pi-controller agent-credentials``: issue agents' Redis credentials without the API.

For setting up a fleet before the controller serves (docker compose's one-shot ``enroll``
service, a script that images SD cards): it talks to Redis with the controller's own URL,
exactly as ``POST /api/v1/nodes/{id}/agent-credentials`` does.
"""

from __future__ import annotations

from pathlib import Path

from common import redis_client
from common.files import write_secret
from common.keys import Keys
from controller.settings import ControllerSettings
from controller.store.agents import AgentAccess


async def write_url_files(settings: ControllerSettings, node_ids: list[str], out_dir: Path
                          ) -> dict[str, tuple[Path, str]]:
    """Issue each node's credentials and write its URL to ``out_dir/NODE_ID.url`` (0600);
    the file and the Redis user of each node."""
    url = settings.redis_target()
    redis = redis_client.connect(url, ca_file=settings.redis_ca_file)
    access = AgentAccess(redis, Keys(settings.redis_prefix), redis_url=url,
                         agent_address=settings.agent_redis_address)
    written: dict[str, tuple[Path, str]] = {}
    try:
        for node_id in node_ids:
            credentials = await access.issue(node_id)
            path = out_dir / f"{node_id}.url"
            write_secret(path, credentials.redis_url + "\n")
            written[node_id] = (path, credentials.username)
    finally:
        await redis.aclose()
    return written


async def issue(settings: ControllerSettings, node_ids: list[str], out_dir: Path | None) -> int:
    if out_dir is not None:
        for node_id, (path, user) in (await write_url_files(settings, node_ids,
                                                            out_dir)).items():
            print(f"{node_id}: {path} (user {user})", flush=True)
        return 0
    url = settings.redis_target()
    redis = redis_client.connect(url, ca_file=settings.redis_ca_file)
    access = AgentAccess(redis, Keys(settings.redis_prefix), redis_url=url,
                         agent_address=settings.agent_redis_address)
    try:
        for node_id in node_ids:
            print(f"{node_id} {(await access.issue(node_id)).redis_url}", flush=True)
    finally:
        await redis.aclose()
    return 0
