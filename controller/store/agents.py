"""Each agent's own Redis identity: an ACL user that reaches its node's keys and nothing else.

An agent's user may append to its ingress stream and ring its own channel, read and
acknowledge its command stream through its consumer group, rewrite its ``alive`` key and
read its ``desired`` hash. Every
other key (tokens, sessions, host keys, clusters, jobs, ``pic:events``, other nodes) answers
NOPERM. Redis keeps ACL users in memory only, so the controller keeps each user's record
(name and the SHA-256 of its password, never the password) and re-applies them all whenever
it (re)connects: users survive a Redis restart without an ACL file.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Collection
from urllib.parse import quote, urlsplit

import msgspec
from redis.exceptions import ResponseError

from common import events, grammar, redis_client
from common.errors import ValidationError
from common.keys import INGEST_GROUP, Keys
from common.redis_client import SENTINEL_SCHEMES, Redis, parse_sentinel_url

logger = logging.getLogger(__name__)


class AgentRecord(msgspec.Struct, kw_only=True):
    username: str
    password_sha256: str
    issued_at: str


class AgentCredentials(msgspec.Struct, kw_only=True):
    """Answered once, when issued: the password is not kept anywhere in clear."""

    redis_url: str
    username: str


_record_json = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(AgentRecord)


def acl_rules(keys: Keys, node_id: str, password_sha256: str) -> list[str]:
    """ACL SETUSER arguments: no key or command but those, each command only on its key."""
    return [
        "reset", "on", f"#{password_sha256}", "resetchannels", f"&{keys.ring(node_id)}",
        "-@all", "+ping", "+client|setname", "+select", "+multi", "+exec", "+discard",
        "+publish",
        f"(~{keys.ingress(node_id)} +xadd)",
        f"(~{keys.commands(node_id)} +xreadgroup +xack +xgroup|create)",
        f"(~{keys.alive(node_id)} +set)",
        f"(%R~{keys.desired(node_id)} +hgetall)",
    ]


def agent_url(controller_url: str, agent_address: str, username: str, password: str) -> str:
    """The URL an agent connects with: the Pis' view of Redis, the agent's own user.

    Behind Sentinel the agent asks the same Sentinels (or ``agent_address``: the Pis' view
    of them, comma-separated) with the controller's Sentinel credentials, which should be a
    Sentinel user that may only look up the primary."""
    if urlsplit(controller_url).scheme in SENTINEL_SCHEMES:
        return parse_sentinel_url(controller_url).url(
            username=username, password=password, sentinels=agent_address or None)
    parts = urlsplit(controller_url)
    scheme = "rediss" if parts.scheme == "rediss" else "redis"
    address = agent_address or f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
    db = parts.path.lstrip("/") or "0"
    return f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{address}/{db}"


class AgentAccess:
    def __init__(self, redis: Redis, keys: Keys, *, redis_url: str,
                 agent_address: str) -> None:
        self._redis = redis
        self._keys = keys
        self._redis_url = redis_url
        self._agent_address = agent_address

    async def issue(self, node_id: str) -> AgentCredentials:
        """Create or rotate the node's user; an old password stops working at once."""
        if not grammar.is_label(node_id):
            raise ValidationError("node_id", "lower-case letters, digits and '-', at most 63")
        password = secrets.token_urlsafe(32)
        username = self._keys.agent_user(node_id)
        record = AgentRecord(username=username,
                             password_sha256=hashlib.sha256(password.encode()).hexdigest(),
                             issued_at=events.now_iso())
        await self._apply(node_id, record)
        await self._redis.hset(self._keys.agents, node_id, _record_json.encode(record))
        await self._redis.incr(self._keys.agents_version)
        await self._ensure_ingress(node_id)
        await self._disconnect(username)
        await self.sync_replicas()
        logger.info("agent credentials issued for node %s (user %s)", node_id, username)
        return AgentCredentials(redis_url=agent_url(self._redis_url, self._agent_address,
                                                    username, password), username=username)

    async def revoke(self, node_id: str) -> bool:
        """Remove the node's user and cut its connections; False if it had none."""
        username = self._keys.agent_user(node_id)
        removed = await self._redis.hdel(self._keys.agents, node_id)
        await self._redis.incr(self._keys.agents_version)
        await self._redis.execute_command("ACL", "DELUSER", username)
        await self._disconnect(username)
        await self.sync_replicas()
        if removed:
            logger.info("agent credentials of node %s revoked", node_id)
        return bool(removed)

    async def version(self) -> int:
        """Changes whenever credentials are issued or revoked (on any replica)."""
        return int(await self._redis.get(self._keys.agents_version) or 0)

    async def enrolled(self) -> list[str]:
        """Nodes that have agent credentials: the ingress streams the controller reads."""
        return sorted(n.decode() for n in await self._redis.hkeys(self._keys.agents))

    async def apply_all(self, node_ids: Collection[str] | None = None) -> int:
        """Re-create every recorded user, or those of ``node_ids`` (after a Redis restart
        they are gone); returns how many."""
        records = await self._redis.hgetall(self._keys.agents)
        applied = 0
        for raw_id, raw in records.items():
            node_id = raw_id.decode()
            if node_ids is not None and node_id not in node_ids:
                continue
            await self._apply(node_id, _record_decoder.decode(raw))
            await self._ensure_ingress(node_id)
            applied += 1
        return applied

    async def repair(self, node_ids: list[str]) -> int:
        """Re-apply the users when Redis has lost any of them (it restarted, or someone
        deleted one by hand); returns how many were missing."""
        present = {u.decode() for u in await self._redis.execute_command("ACL", "USERS")}
        missing = [n for n in node_ids if self._keys.agent_user(n) not in present]
        if missing:
            logger.warning("Redis had lost %d agent user(s) (restarted without them?); "
                           "re-creating them", len(missing))
            await self.apply_all(missing)
        return len(missing)

    async def sync_replicas(self) -> None:
        """Make every replica's agent users those of the primary (ACLs are not replicated:
        a promoted replica must have them already). Without Sentinel, nothing to do."""
        replicas = await redis_client.replicas_of(self._redis)
        if not replicas:
            return
        records = {n.decode(): _record_decoder.decode(raw)
                   for n, raw in (await self._redis.hgetall(self._keys.agents)).items()}
        wanted = {self._keys.agent_user(n) for n in records}
        prefix = self._keys.agent_user("")
        for replica in replicas:
            try:
                present = {u.decode() for u in await replica.execute_command("ACL", "USERS")}
                for node_id, record in records.items():
                    if record.username not in present:
                        await replica.execute_command(
                            "ACL", "SETUSER", record.username,
                            *acl_rules(self._keys, node_id, record.password_sha256))
                for stale in present - wanted:
                    if stale.startswith(prefix):
                        await replica.execute_command("ACL", "DELUSER", stale)
            except (*redis_client.UNAVAILABLE, ResponseError) as err:
                logger.warning("could not copy agent users to a replica (%s); retrying later",
                               type(err).__name__)
            finally:
                await replica.aclose()

    async def _apply(self, node_id: str, record: AgentRecord) -> None:
        await self._redis.execute_command(
            "ACL", "SETUSER", record.username,
            *acl_rules(self._keys, node_id, record.password_sha256))

    async def _ensure_ingress(self, node_id: str) -> None:
        try:
            await self._redis.xgroup_create(self._keys.ingress(node_id), INGEST_GROUP, id="0",
                                            mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def _disconnect(self, username: str) -> None:
        try:
            await self._redis.execute_command("CLIENT", "KILL", "USER", username)
        except ResponseError as err:
            if "No such user" not in str(err):
                raise
