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


async def issue(settings: ControllerSettings, node_ids: list[str], out_dir: Path | None) -> int:
    url = settings.redis_target()
    redis = redis_client.connect(url, ca_file=settings.redis_ca_file)
    access = AgentAccess(redis, Keys(settings.redis_prefix), redis_url=url,
                         agent_address=settings.agent_redis_address)
    try:
        for node_id in node_ids:
            credentials = await access.issue(node_id)
            if out_dir is None:
                print(f"{node_id} {credentials.redis_url}", flush=True)
            else:
                write_secret(out_dir / f"{node_id}.url", credentials.redis_url + "\n")
                print(f"{node_id}: {out_dir / f'{node_id}.url'} (user {credentials.username})",
                      flush=True)
    finally:
        await redis.aclose()
    return 0
