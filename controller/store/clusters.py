"""Clusters: the cluster records (``pic:cluster:{id}``), their index, and their members.

A cluster is a hash of flat string fields; its members are the fields ``role:<node>``,
``state:<node>``, ``host:<node>`` (the node's host name) and ``job:<node>`` (its last job),
and ``name:<host>`` holds which member claimed a host name. A node belongs to one cluster at
a time (``cluster_id`` and ``cluster_role`` in its node record): it is claimed under WATCH on
the node records, and the claim, the cluster record, the jobs and their events commit
together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from redis.asyncio.client import Pipeline

from common import events
from common.errors import ConflictError
from common.redis_client import Redis
from controller.provision import model
from controller.provision.model import Cluster, Job, Member
from controller.store import tx

if TYPE_CHECKING:
    from controller.store.core import Store

T = TypeVar("T")

_MEMBER_FIELDS = {"role": "role", "state": "state", "host": "hostname", "job": "job_id"}
"""Member field prefix in the cluster hash -> its name in ``Member``."""

_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 0
"""


def _csv(items: list[str]) -> str:
    return ",".join(items)


def _uncsv(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def cluster_fields(cluster: Cluster) -> dict[str, str]:
    """The cluster's own fields (not its members) as flat strings for its hash."""
    return {
        "id": cluster.id, "name": cluster.name, "status": cluster.status,
        "version": cluster.version, "channel": cluster.channel,
        "disable": _csv(cluster.disable), "tls_sans": _csv(cluster.tls_sans),
        "force_even": "1" if cluster.force_even else "0", "server_node": cluster.server_node,
        "created_at": f"{cluster.created_at:.3f}", "updated_at": f"{cluster.updated_at:.3f}",
    }


def cluster_from_hash(raw: dict[bytes, bytes]) -> Cluster:
    text = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    members: dict[str, Member] = {}
    for key, value in text.items():
        kind, sep, node_id = key.partition(":")
        if not sep or kind not in _MEMBER_FIELDS:
            continue
        member = members.setdefault(node_id, Member(node_id=node_id, role="", state=""))
        setattr(member, _MEMBER_FIELDS[kind], value)
    return Cluster(
        id=text.get("id", ""), name=text.get("name", ""),
        status=text.get("status", ""), version=text.get("version", ""),
        channel=text.get("channel", ""), disable=_uncsv(text.get("disable", "")),
        tls_sans=_uncsv(text.get("tls_sans", "")), force_even=text.get("force_even") == "1",
        server_node=text.get("server_node", ""),
        created_at=float(text.get("created_at") or 0),
        updated_at=float(text.get("updated_at") or 0),
        members=sorted((m for m in members.values() if m.role), key=lambda m: m.node_id),
    )


class Clusters:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    async def _commit(self, watch: list[str], body: Callable[[Pipeline], Awaitable[T]],
                      cluster_id: str) -> T:
        """A change of one cluster: a transaction, confirmed by replicas where asked."""
        return await tx.transact(self._redis, watch, body, what=f"cluster {cluster_id!r}",
                                 field="cluster", confirm=self._store.confirm)

    # --- reading ---------------------------------------------------------------------

    async def ids(self) -> list[str]:
        return sorted(m.decode() for m in await self._redis.smembers(self._keys.clusters))

    async def get(self, cluster_id: str) -> Cluster | None:
        """The cluster, its members without their addresses (those are the nodes')."""
        raw = await self._redis.hgetall(self._keys.cluster(cluster_id))
        return cluster_from_hash(raw) if raw else None

    async def all(self) -> list[Cluster]:
        ids = await self.ids()
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for cluster_id in ids:
                pipe.hgetall(self._keys.cluster(cluster_id))
            rows = await pipe.execute()
        return [cluster_from_hash(raw) for raw in rows if raw]

    async def token_digest(self, cluster_id: str) -> str:
        """The SHA-256 of the cluster's join token, once its first server has one; else ""."""
        raw = await self._redis.hget(self._keys.cluster(cluster_id), "token_sha256")
        return raw.decode() if raw else ""

    # --- membership and jobs ---------------------------------------------------------

    async def create(self, cluster: Cluster, jobs: Sequence[Job]) -> None:
        """Store a new cluster with the jobs' nodes as members (each job says its node and
        role), queue the jobs and announce it; ConflictError if a node is in another
        cluster."""
        servers = sum(job.role == "server" for job in jobs)
        await self._claim(cluster.id, jobs, record=cluster, event=events.system_log_created(
            "info", f"cluster {cluster.name} created with {servers} server(s) and "
            f"{len(jobs) - servers} agent(s)", source="provisioner"))

    async def add_member(self, cluster_id: str, job: Job) -> None:
        """Make the job's node a member of the cluster (its role is the job's) and queue the
        job; ConflictError if the node is in another cluster."""
        await self._claim(cluster_id, [job])

    async def _claim(self, cluster_id: str, jobs: Sequence[Job], *,
                     record: Cluster | None = None, event: events.Event | None = None
                     ) -> None:
        keys = self._keys
        node_keys = [keys.node(job.node_id) for job in jobs]
        ckey = keys.cluster(cluster_id)

        async def body(pipe: Pipeline) -> None:
            for job, key in zip(jobs, node_keys, strict=True):
                current = await pipe.hget(key, "cluster_id")
                if current and current.decode() != cluster_id:
                    raise ConflictError("node_id", f"node {job.node_id!r} is already in "
                                        f"cluster {current.decode()!r}; remove it there first")
            pipe.multi()
            if record is not None:
                pipe.hset(ckey, mapping=cluster_fields(record))
                pipe.sadd(keys.clusters, cluster_id)
            for job, key in zip(jobs, node_keys, strict=True):
                pipe.hset(key, mapping={"cluster_id": cluster_id, "cluster_role": job.role})
                pipe.hset(ckey, mapping={f"role:{job.node_id}": job.role,
                                         f"state:{job.node_id}": model.JOINING,
                                         f"job:{job.node_id}": job.id})
            self._store.jobs.stage_enqueue(pipe, jobs)
            if event is not None:
                self._store.stage_event(pipe, event)

        await tx.transact(self._redis, node_keys, body, what=f"the nodes of cluster "
                          f"{cluster_id!r}", field="node_id", confirm=self._store.confirm)

    async def enqueue(self, cluster_id: str, jobs: Sequence[Job]) -> None:
        """Queue jobs of members (new ones, or failed ones again), each its member's job."""
        await self._enqueue(cluster_id, jobs, {})

    async def start_removal(self, cluster_id: str, job: Job) -> None:
        """Queue the job that removes its node from the cluster; the member is 'removing'."""
        await self._enqueue(cluster_id, [job], {f"state:{job.node_id}": model.REMOVING})

    async def _enqueue(self, cluster_id: str, jobs: Sequence[Job],
                       fields: dict[str, str]) -> None:
        key = self._keys.cluster(cluster_id)

        async def body(pipe: Pipeline) -> None:
            pipe.multi()
            pipe.hset(key, mapping={**fields, **{f"job:{job.node_id}": job.id for job in jobs}})
            self._store.jobs.stage_enqueue(pipe, jobs)

        await self._commit([], body, cluster_id)

    # --- the cluster record ----------------------------------------------------------

    async def update_settings(self, cluster: Cluster) -> bool:
        """Write the cluster's own settings (not its status, first server or members);
        False if it no longer exists."""
        key = self._keys.cluster(cluster.id)
        fields = cluster_fields(cluster)
        del fields["status"], fields["server_node"]

        async def body(pipe: Pipeline) -> bool:
            if not await pipe.exists(key):
                return False
            pipe.multi()
            pipe.hset(key, mapping=fields)
            return True

        return await self._commit([key], body, cluster.id)

    async def mark_deleting(self, cluster_id: str) -> bool:
        """The cluster is being deleted (its members are leaving); False if it is gone."""
        key = self._keys.cluster(cluster_id)

        async def body(pipe: Pipeline) -> bool:
            if not await pipe.exists(key):
                return False
            pipe.multi()
            pipe.hset(key, "status", "deleting")
            return True

        return await self._commit([key], body, cluster_id)

    async def delete_empty(self, cluster_id: str) -> bool:
        """Delete a cluster that has no members, and announce it; False if it is gone,
        ConflictError if it has members (again)."""
        key = self._keys.cluster(cluster_id)

        async def body(pipe: Pipeline) -> bool:
            raw = await pipe.hgetall(key)
            if not raw:
                return False
            cluster = cluster_from_hash(raw)
            if cluster.members:
                raise ConflictError("cluster", "nodes joined the cluster while it was being "
                                    "deleted; retry")
            pipe.multi()
            pipe.delete(key)
            pipe.srem(self._keys.clusters, cluster_id)
            self._store.stage_event(pipe, events.system_log_created(
                "info", f"cluster {cluster.name} deleted", source="provisioner"))
            return True

        return await self._commit([key], body, cluster_id)

    async def set_token_digest(self, cluster_id: str, digest: str) -> None:
        """Record the SHA-256 of the join token the cluster's first server holds."""
        await self._redis.hset(self._keys.cluster(cluster_id), "token_sha256", digest)

    async def mark_ready(self, cluster_id: str) -> bool:
        """The cluster is 'ready' once every member has joined; True if this call made it."""
        key = self._keys.cluster(cluster_id)

        async def body(pipe: Pipeline) -> bool:
            raw = await pipe.hgetall(key)
            if not raw:
                return False
            cluster = cluster_from_hash(raw)
            if cluster.status == "ready" or any(m.state != model.JOINED
                                                for m in cluster.members):
                return False
            pipe.multi()
            pipe.hset(key, "status", "ready")
            return True

        return await self._commit([key], body, cluster_id)

    # --- one member ------------------------------------------------------------------

    async def update_member(self, cluster_id: str, node_id: str, *, state: str | None = None,
                            job_id: str | None = None, hostname: str | None = None) -> bool:
        """Set a member's state, job or host name, unless the cluster is gone (a deleted
        cluster is not brought back as a fragment); False if it is."""
        values = {"state": state, "job": job_id, "host": hostname}
        flat: list[str] = []
        for prefix, value in values.items():
            if value is not None:
                flat += [f"{prefix}:{node_id}", value]
        if not flat:
            return True
        return bool(await self._redis.eval(_HSET_IF_EXISTS, 1, self._keys.cluster(cluster_id),
                                           *flat))

    async def claim_hostname(self, cluster_id: str, hostname: str, node_id: str) -> str:
        """Claim ``hostname`` in the cluster for ``node_id``, unless a member holds it;
        returns the node that holds it (``node_id`` when the claim is, or was, its own).
        Atomic: members of one request run their preflights at the same time."""
        key, field = self._keys.cluster(cluster_id), f"name:{hostname}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, field, node_id)
            pipe.hget(key, field)
            _, holder = await pipe.execute()
        return holder.decode() if holder else node_id

    async def member_joined(self, cluster_id: str, node_id: str, ip_address: str,
                            node_status: str) -> bool:
        """The member is in the cluster (its K3s node is Ready): state 'joined', announced
        with ``cluster.node.added``; False if it had joined already or the cluster is gone.
        """
        key = self._keys.cluster(cluster_id)

        async def body(pipe: Pipeline) -> bool:
            raw = await pipe.hgetall(key)
            if not raw:
                return False
            member = cluster_from_hash(raw).member(node_id)
            if member is not None and member.state == model.JOINED:
                return False
            pipe.multi()
            pipe.hset(key, f"state:{node_id}", model.JOINED)
            self._store.stage_event(pipe, events.cluster_node_added(
                cluster_id, node_id, ip_address, node_status))
            return True

        return await self._commit([key], body, cluster_id)

    async def remove_member(self, cluster_id: str, node_id: str, ip_address: str,
                            node_status: str) -> tuple[Cluster, bool] | None:
        """The node has left the cluster: forget the member (and its host name), free the
        node, and announce ``cluster.node.removed``. The last member to leave a cluster
        being deleted deletes its record. Returns the cluster as it was and whether its
        record was deleted; None if the cluster is gone."""
        keys = self._keys
        ckey, nkey = keys.cluster(cluster_id), keys.node(node_id)

        # WATCH: members of a cluster being deleted leave concurrently, and exactly the last
        # one to leave must delete the cluster record.
        async def body(pipe: Pipeline) -> tuple[Cluster, bool] | None:
            raw = await pipe.hgetall(ckey)
            if not raw:
                return None
            cluster = cluster_from_hash(raw)
            fields = [f"{k}:{node_id}" for k in _MEMBER_FIELDS]
            host = raw.get(f"host:{node_id}".encode())
            if host:
                fields.append(f"name:{host.decode()}")
            remaining = [m for m in cluster.members if m.node_id != node_id]
            deleted = not remaining and cluster.status == "deleting"
            pipe.multi()
            pipe.hdel(ckey, *fields)
            if cluster.server_node == node_id:
                others = [m.node_id for m in remaining if m.role == "server"]
                pipe.hset(ckey, "server_node", others[0] if others else "")
            if deleted:
                pipe.delete(ckey)
                pipe.srem(keys.clusters, cluster_id)
            pipe.hdel(nkey, "cluster_id", "cluster_role")
            self._store.stage_event(pipe, events.cluster_node_removed(
                cluster_id, node_id, ip_address, node_status))
            return cluster, deleted

        return await self._commit([ckey], body, cluster_id)
