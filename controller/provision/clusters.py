"""ClusterService: validates requests, claims nodes for a cluster and enqueues their jobs.

A node belongs to one cluster at a time: the store claims it (``store.clusters``), and the
claim, the cluster record, the jobs and their events commit together.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from typing import Any

from common import grammar
from common.errors import ConflictError, NotFoundError, ValidationError
from controller.provision import k3s, model
from controller.provision.model import Cluster, Job, Role
from controller.store import Node, Store


def _str_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError(name, "must be a list of non-empty strings")
    return list(value)


def _validate_settings(body: dict[str, Any], cluster: Cluster) -> None:
    """Apply the K3s settings present in ``body`` to ``cluster``, validating each."""
    if "name" in body:
        name = body["name"]
        if not grammar.is_label(name):
            raise ValidationError("name", "1-63 lower-case letters, digits or '-', starting "
                                  "and ending with a letter or digit")
        cluster.name = name
    if "version" in body:
        version = body["version"] or ""
        if not isinstance(version, str) or (version and not k3s.VERSION_RE.match(version)):
            raise ValidationError("version", "a K3s release such as v1.31.4+k3s1")
        cluster.version = version
        if version:
            cluster.channel = ""
    if "channel" in body:
        channel = body["channel"] or ""
        if not isinstance(channel, str) or (channel and not k3s.CHANNEL_RE.match(channel)):
            raise ValidationError("channel", "stable, latest, testing or a minor such as v1.31")
        if channel and body.get("version"):
            raise ValidationError("channel", "give either version or channel, not both")
        cluster.channel = channel
        if channel:
            cluster.version = ""
    if "disable" in body:
        disable = _str_list(body, "disable")
        unknown = [d for d in disable if d not in k3s.COMPONENTS]
        if unknown:
            raise ValidationError("disable", f"unknown component {unknown[0]!r}; one of "
                                  f"{', '.join(k3s.COMPONENTS)}")
        cluster.disable = disable
    if "tls_sans" in body:
        sans = _str_list(body, "tls_sans")
        for san in sans:
            try:
                ipaddress.ip_address(san)
            except ValueError:
                if not grammar.is_hostname(san):
                    raise ValidationError("tls_sans", f"{san!r} is neither an IP address nor "
                                          "a host name") from None
        cluster.tls_sans = sans
    if "force" in body:
        if not isinstance(body["force"], bool):
            raise ValidationError("force", "must be true or false")
        cluster.force_even = body["force"]


def _check_odd(servers: int, force: bool, field: str) -> None:
    if servers % 2 == 0 and not force:
        raise ValidationError(field, f"{servers} servers cannot keep etcd quorum when one "
                              "fails (no better than one less); use an odd number, or set "
                              "force to true")


class ClusterService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.jobs = store.jobs

    # --- reads ---------------------------------------------------------------------------

    async def get(self, cluster_id: str) -> Cluster:
        cluster = await self.store.clusters.get(cluster_id)
        if cluster is None:
            raise NotFoundError("cluster", cluster_id)
        await self._fill_addresses(cluster)
        return cluster

    async def all(self) -> list[Cluster]:
        clusters = await self.store.clusters.all()
        for cluster in clusters:
            await self._fill_addresses(cluster)
        return clusters

    async def _fill_addresses(self, cluster: Cluster) -> None:
        for member in cluster.members:
            member.ip_address = await self.store.nodes.field(member.node_id, "ip_address") or ""

    # --- writes --------------------------------------------------------------------------

    async def create(self, body: Any) -> tuple[Cluster, list[Job]]:
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        if not body.get("name"):
            raise ValidationError("name", "is required")
        now = time.time()
        cluster = Cluster(id=f"c-{uuid.uuid4().hex[:10]}", name="", created_at=now,
                          updated_at=now)
        _validate_settings(body, cluster)
        servers = _str_list(body, "servers")
        agents = _str_list(body, "agents")
        if not servers:
            raise ValidationError("servers", "at least one server node is required")
        dup = {n for n in servers + agents if (servers + agents).count(n) > 1}
        if dup:
            raise ValidationError("agents" if set(agents) & dup else "servers",
                                  f"node {sorted(dup)[0]!r} is listed twice")
        _check_odd(len(servers), cluster.force_even, "servers")
        if any(c.name == cluster.name for c in await self.all()):
            raise ConflictError("name", f"a cluster named {cluster.name!r} exists already")
        cluster.server_node = servers[0]
        roles: list[tuple[str, Role]] = [(n, "server") for n in servers] + \
            [(n, "agent") for n in agents]
        for i, (node_id, _role) in enumerate(roles):
            await self._require_node(node_id, "servers" if i < len(servers) else "agents")
        jobs = [model.new_job("provision", n, cluster.id, r) for n, r in roles]
        await self.store.clusters.create(cluster, jobs)
        return await self.get(cluster.id), jobs

    async def update(self, cluster_id: str, body: Any) -> Cluster:
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        cluster = await self.get(cluster_id)
        for name in body:
            if name not in ("name", "version", "channel", "disable", "tls_sans", "force"):
                raise ValidationError(name, "cannot be changed here (members: use "
                                      "/clusters/{id}/nodes)")
        old_name = cluster.name
        _validate_settings(body, cluster)
        if cluster.name != old_name and any(c.name == cluster.name for c in await self.all()):
            raise ConflictError("name", f"a cluster named {cluster.name!r} exists already")
        cluster.updated_at = time.time()
        if not await self.store.clusters.update_settings(cluster):
            raise NotFoundError("cluster", cluster_id)
        return await self.get(cluster_id)

    async def add_node(self, cluster_id: str, body: Any) -> Job:
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        cluster = await self.get(cluster_id)
        if cluster.status == "deleting":
            raise ConflictError("cluster", "the cluster is being deleted")
        node_id = body.get("node_id")
        if not isinstance(node_id, str) or not node_id:
            raise ValidationError("node_id", "is required")
        role = body.get("role", "agent")
        if role not in ("server", "agent"):
            raise ValidationError("role", "server or agent")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ValidationError("force", "must be true or false")
        if role == "server":
            _check_odd(len(cluster.servers()) + 1, force or cluster.force_even, "role")
        await self._require_node(node_id, "node_id")
        await self._set_ssh_user(node_id, body)
        existing = cluster.member(node_id)
        if existing is not None:
            raise ConflictError("node_id", f"node {node_id!r} is already a {existing.role} of "
                                "this cluster; re-run its job with POST /api/v1/nodes/"
                                f"{node_id}/provision")
        job = model.new_job("provision", node_id, cluster.id, role)
        await self.store.clusters.add_member(cluster.id, job)
        return job

    async def provision_node(self, node_id: str, body: Any) -> Job:
        """Re-run (resume) the node's provisioning, or add it to the cluster named in body."""
        body = body if isinstance(body, dict) else {}
        await self._require_node(node_id, "node_id")
        await self._set_ssh_user(node_id, body)
        cluster_id = await self.store.nodes.field(node_id, "cluster_id") or ""
        if not cluster_id:
            target = body.get("cluster_id")
            if not isinstance(target, str) or not target:
                raise ValidationError("cluster_id", "the node is in no cluster: name the "
                                      "cluster to join (and its role)")
            return await self.add_node(target, {**body, "node_id": node_id})
        if body.get("cluster_id") not in (None, cluster_id):
            raise ConflictError("cluster_id", f"node {node_id!r} is already in cluster "
                                f"{cluster_id!r}")
        cluster = await self.get(cluster_id)
        member = cluster.member(node_id)
        if member is None:
            raise ConflictError("node_id", f"node {node_id!r} is being removed from "
                                f"{cluster_id!r}")
        previous = await self.jobs.get(member.job_id) if member.job_id else None
        if previous is not None and previous.kind == "provision":
            if previous.status in model.ACTIVE:
                return previous
            if previous.status in (model.FAILED, model.INTERRUPTED):
                return await self.retry(previous.id)
        job = model.new_job("provision", node_id, cluster_id, member.role)  # type: ignore[arg-type]
        await self.store.clusters.enqueue(cluster_id, [job])
        return job

    async def retry(self, job_id: str) -> Job:
        """Queue a failed or interrupted job again: it resumes at the step that failed."""
        job = await self.jobs.get(job_id)
        if job is None:
            raise NotFoundError("job", job_id)
        if job.status in model.ACTIVE:
            return job
        if job.status == model.SUCCEEDED:
            raise ConflictError("job", f"job {job_id} succeeded; start a new one instead")
        job.status = model.QUEUED
        job.interruptions = 0
        await self.store.clusters.enqueue(job.cluster_id, [job])
        return job

    async def remove_node(self, cluster_id: str, node_id: str) -> Job:
        cluster = await self.get(cluster_id)
        member = cluster.member(node_id)
        if member is None:
            raise NotFoundError("cluster member", node_id)
        await self._no_active_job(member)
        if member.role == "server" and cluster.status != "deleting":
            others = [m for m in cluster.members if m.node_id != node_id]
            if others and not [m for m in cluster.servers() if m.node_id != node_id]:
                raise ConflictError("node", f"{node_id!r} is the last server; remove the "
                                    "agents first, or delete the cluster")
        job = model.new_job("deprovision", node_id, cluster_id, member.role)  # type: ignore[arg-type]
        await self.store.clusters.start_removal(cluster_id, job)
        return job

    async def deprovision_node(self, node_id: str) -> Job:
        await self._require_node(node_id, "node_id")
        cluster_id = await self.store.nodes.field(node_id, "cluster_id") or ""
        if not cluster_id:
            raise ConflictError("node_id", f"node {node_id!r} is in no cluster")
        return await self.remove_node(cluster_id, node_id)

    async def delete(self, cluster_id: str) -> list[Job]:
        """Remove every member (agents and servers at once), then the cluster record."""
        cluster = await self.get(cluster_id)
        for member in cluster.members:
            await self._no_active_job(member, allow_removal=True)
        if not cluster.members:
            await self.store.clusters.delete_empty(cluster_id)
            return []
        await self.store.clusters.mark_deleting(cluster_id)
        jobs = []
        for member in cluster.members:
            if member.state == model.REMOVING and member.job_id:
                job = await self.jobs.get(member.job_id)
                if job is not None:
                    jobs.append(job)
                    continue
            jobs.append(await self.remove_node(cluster_id, member.node_id))
        return jobs

    # --- helpers -------------------------------------------------------------------------

    async def _require_node(self, node_id: str, field: str) -> Node:
        node = await self.store.nodes.get(node_id)
        if node is None:
            raise NotFoundError("node", node_id)
        if not node.ip_address:
            raise ValidationError(field, f"node {node_id!r} has no IP address to connect to")
        return node

    async def _set_ssh_user(self, node_id: str, body: dict[str, Any]) -> None:
        user = body.get("ssh_user")
        if user is None:
            return
        if not grammar.is_ssh_user(user):
            raise ValidationError("ssh_user", "a Linux user name such as pi")
        await self.store.nodes.update(node_id, {"ssh_user": user})

    async def _no_active_job(self, member: model.Member, allow_removal: bool = False) -> None:
        job = await self.jobs.get(member.job_id) if member.job_id else None
        if job is None or job.status not in model.ACTIVE:
            return
        if allow_removal and job.kind == "deprovision":
            return
        raise ConflictError("node", f"node {member.node_id!r} has job {job.id} "
                            f"{job.status}; wait for it to finish")
