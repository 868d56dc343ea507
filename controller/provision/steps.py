"""One coroutine per step. Each is idempotent: running it again converges, never breaks.

A step returns a one-line summary (prefix "skipped:" when there was nothing to do) or
raises StepFailed with a message for the user. Steps log every command they run, with
its output, into the step's captured output through the session (redacted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from common.errors import ConflictError
from controller import node_status
from controller.provision import agent_unit, doctor, k3s, model
from controller.provision.credentials import ControllerKey
from controller.provision.model import Cluster, Job
from controller.provision.redact import Redactor
from controller.provision.ssh import Session, StepFailed, Target, connect
from controller.settings import ControllerSettings
from controller.store import Store

logger = logging.getLogger(__name__)

POLL = 0.5
"""Seconds between polls of a server's view of a node, and of a rebooting Pi."""


class AgentCredentials(Protocol):
    @property
    def redis_url(self) -> str: ...


class AgentCredentialIssuer(Protocol):
    """What issues a node's agent its own credentials (the application's agent access)."""

    async def issue(self, node_id: str) -> AgentCredentials: ...


@dataclass
class Context:
    job: Job
    settings: ControllerSettings
    store: Store
    key: ControllerKey
    agents: AgentCredentialIssuer
    slot: asyncio.Semaphore
    join_lock: asyncio.Lock
    redact: Redactor = field(default_factory=Redactor)
    log: Callable[[str], None] = lambda text: None
    sessions: dict[str, Session] = field(default_factory=dict)
    holds_slot: bool = False

    async def cluster(self) -> Cluster:
        cluster = await self.store.clusters.get(self.job.cluster_id)
        if cluster is None:
            raise StepFailed(f"cluster {self.job.cluster_id!r} no longer exists")
        return cluster

    async def target(self, node_id: str) -> Target:
        ip, user, port = await self.store.nodes.fields(node_id, "ip_address", "ssh_user",
                                                       "ssh_port")
        if not ip:
            raise StepFailed(f"node {node_id!r} has no known IP address")
        return Target(node_id=node_id, host=ip,
                      port=int(port) if port else self.settings.ssh_port,
                      user=user or self.settings.ssh_user)

    async def session(self, node_id: str | None = None) -> Session:
        """A session to ``node_id`` (default: the job's node), opened once per job run."""
        node_id = node_id or self.job.node_id
        if node_id not in self.sessions:
            target = await self.target(node_id)
            conn = await connect(target, self.key, self.store.host_keys,
                                 timeout=self.settings.ssh_connect_timeout)
            prefix = "" if node_id == self.job.node_id else f"[{node_id}] "
            self.sessions[node_id] = Session(conn, target, self.redact,
                                             lambda text: self.log(prefix + text))
        return self.sessions[node_id]

    def drop(self, node_id: str) -> None:
        session = self.sessions.pop(node_id, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        for node_id in list(self.sessions):
            self.drop(node_id)

    @contextlib.asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        """Give up this job's parallelism slot while it waits on another job, so a bound
        of N can never be filled by N jobs waiting for one that has no slot."""
        self.slot.release()
        self.holds_slot = False
        try:
            yield
        finally:
            await self.slot.acquire()
            self.holds_slot = True

    async def set_member(self, *, state: str | None = None, job_id: str | None = None,
                         hostname: str | None = None) -> None:
        """Update this node's membership, unless the cluster is gone (it is not brought
        back as a fragment)."""
        await self.store.clusters.update_member(self.job.cluster_id, self.job.node_id,
                                                state=state, job_id=job_id, hostname=hostname)


StepFn = Callable[[Context], Awaitable[str]]


# --- provisioning ------------------------------------------------------------------------


async def step_connect(ctx: Context) -> str:
    ctx.drop(ctx.job.node_id)
    session = await ctx.session()
    await session.run("true", sudo=True)
    pin = await ctx.store.host_keys.get(session.target.host, session.target.port)
    return (f"connected as {session.target.user}@{session.target.host}, sudo -n works; "
            f"host key {pin.fingerprint if pin else '?'}")


async def step_preflight(ctx: Context) -> str:
    session = await ctx.session()
    cluster = await ctx.cluster()
    claimed = await ctx.store.nodes.field(ctx.job.node_id, "cluster_id")
    if claimed and claimed != ctx.job.cluster_id:
        raise StepFailed(f"node {ctx.job.node_id!r} is already in cluster {claimed!r}")
    sent = time.time()
    result = await session.run(doctor.FACTS_SCRIPT, quiet=True)
    received = time.time()
    facts = doctor.parse_facts(result.stdout)
    ctx.job.facts = {k: facts.get(k, "") for k in
                     ("hostname", "model", "arch", "os_name", "cmdline_txt")}
    ctx.job.facts["hostname"] = ctx.job.facts["hostname"].lower()
    token_sha256 = await ctx.store.clusters.token_digest(cluster.id)
    others = {m.hostname.lower(): m.node_id for m in cluster.members
              if m.node_id != ctx.job.node_id and m.hostname}
    init = cluster.server_node == ctx.job.node_id
    server_url = "" if init else await _server_url(ctx, cluster)
    report = doctor.check(facts, doctor.Expectations(
        role=ctx.job.role, arches=tuple(ctx.settings.provision_arch),
        require_pi=ctx.settings.provision_require_pi, server_url=server_url,
        cluster_token_sha256=token_sha256, other_hostnames=others),
        sent_at=sent, received_at=received)
    hostname = ctx.job.facts["hostname"]
    if hostname and not report.failures:
        # Claimed atomically: nodes of one request run their preflights at the same time.
        owner = await ctx.store.clusters.claim_hostname(cluster.id, hostname, ctx.job.node_id)
        if owner != ctx.job.node_id:
            report.failures.append(
                f"hostname {hostname!r} is also node {owner!r} of this cluster; "
                "K3s needs unique node names (sudo hostnamectl set-hostname NEW)")
    ctx.log(report.render())
    if report.failures:
        raise StepFailed("; ".join(report.failures))
    await ctx.set_member(hostname=hostname)
    warn = f" ({len(report.warnings)} warning(s))" if report.warnings else ""
    return f"{ctx.job.facts['model'] or 'host'} {ctx.job.facts['arch']}, " \
           f"{ctx.job.facts['os_name']}: all checks passed{warn}"


async def _cgroup_state(session: Session) -> tuple[bool, str]:
    out = (await session.run("cat /proc/cmdline; awk '$1==\"memory\"{print $4}' /proc/cgroups",
                             quiet=True)).stdout.splitlines()
    cmdline = out[0] if out else ""
    return doctor.memory_cgroup_enabled(cmdline, out[1] if len(out) > 1 else ""), cmdline


async def step_cgroups(ctx: Context) -> str:
    session = await ctx.session()
    enabled, _ = await _cgroup_state(session)
    if enabled:
        return "skipped: memory cgroups are enabled"
    found = await session.run("for f in /boot/firmware/cmdline.txt /boot/cmdline.txt; do "
                              "[ -f \"$f\" ] && { echo \"$f\"; break; }; done; true")
    path = found.stdout.strip()
    if not path:
        raise StepFailed("memory cgroups are disabled and no cmdline.txt was found under "
                         "/boot/firmware or /boot to enable them")
    flags = " ".join(doctor.CGROUP_FLAGS)
    q = shlex.quote(path)
    await session.run(
        f"[ -e {q}.pi-controller.bak ] || cp {q} {q}.pi-controller.bak; "
        f"for flag in {flags}; do grep -Eq \"(^| )$flag( |\\$)\" {q} || "
        f"sed -i \"1 s/\\$/ $flag/\" {q}; done; cat {q}", sudo=True)
    # Detached and delayed, so this command returns before the connection drops.
    await session.run("setsid sh -c 'sleep 1; reboot' </dev/null >/dev/null 2>&1 &", sudo=True)
    ctx.drop(ctx.job.node_id)
    ctx.log(f"rebooting to apply {path}; waiting up to {ctx.settings.reboot_timeout:.0f}s\n")
    started = time.monotonic()
    deadline = started + ctx.settings.reboot_timeout
    last_error = ""
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        try:
            session = await ctx.session()
            enabled, _ = await _cgroup_state(session)
        except StepFailed as err:
            last_error = err.message
            ctx.drop(ctx.job.node_id)
            continue
        if enabled:
            return f"added {flags} to {path}, rebooted, back after " \
                   f"{time.monotonic() - started:.1f}s"
        ctx.drop(ctx.job.node_id)
    raise StepFailed(f"the node did not come back with memory cgroups enabled within "
                     f"{ctx.settings.reboot_timeout:.0f}s after the reboot"
                     + (f" (last error: {last_error})" if last_error else ""))


async def _server_url(ctx: Context, cluster: Cluster) -> str:
    target = await ctx.target(cluster.server_node)
    return k3s.server_url(target.host)


async def _wait_for_first_server(ctx: Context, cluster: Cluster) -> None:
    """Joiners wait (without holding a slot) until the first server is Ready."""
    server = cluster.server_node
    async with ctx.waiting():
        while True:
            cluster = await ctx.cluster()
            member = cluster.member(server)
            if member is None:
                raise StepFailed(f"the cluster's first server {server!r} is no longer a member")
            if member.state == model.JOINED:
                return
            job_status = ""
            if member.job_id:
                job_status = await ctx.store.jobs.status(member.job_id) or ""
            if job_status == model.SUCCEEDED:
                return
            if member.state == model.MEMBER_FAILED or job_status in model.FINISHED:
                raise StepFailed(f"the cluster's first server {server!r} is not up (its job "
                                 f"{member.job_id or '?'} did not succeed); retry this job "
                                 "once it is")
            await asyncio.sleep(POLL / 2)


async def step_install_k3s(ctx: Context) -> str:
    cluster = await ctx.cluster()
    init = cluster.server_node == ctx.job.node_id
    url = ""
    if not init:
        await _wait_for_first_server(ctx, cluster)
        url = await _server_url(ctx, cluster)
    plan = k3s.InstallPlan(role=ctx.job.role, init=init, url=url, version=cluster.version,
                           channel=cluster.channel, disable=tuple(cluster.disable),
                           tls_sans=tuple(cluster.tls_sans),
                           node_name=ctx.job.facts.get("hostname") or ctx.job.node_id)
    # Servers join etcd one at a time: it accepts one learner member at once.
    lock = ctx.join_lock if ctx.job.role == "server" and not init else contextlib.nullcontext()
    async with lock:
        session = await ctx.session()
        if not init:
            token = await k3s.read_token(await ctx.session(cluster.server_node))
            await k3s.write_join_token(session, token)
        if ctx.settings.k3s_install_source == "bundle":
            script = await k3s.upload_bundle(session, Path(ctx.settings.k3s_bundle_dir),
                                             ctx.job.facts.get("arch", ""))
            await k3s.install_bundle(session, plan, script)
        else:
            await k3s.install_online(session, plan, ctx.settings.k3s_install_url)
        if init:
            token = await k3s.read_token(session)
            await ctx.store.clusters.set_token_digest(cluster.id, doctor.token_sha256(token))
    what = "first server (embedded etcd)" if init else f"{ctx.job.role} joined to {url}"
    source = ctx.settings.k3s_install_source
    return f"K3s {cluster.version or cluster.channel or 'stable'} installed as {what} " \
           f"({source})"


async def step_wait_ready(ctx: Context) -> str:
    cluster = await ctx.cluster()
    server_id = ctx.job.node_id if ctx.job.role == "server" else cluster.server_node
    name = ctx.job.facts.get("hostname") or ctx.job.node_id
    timeout = ctx.settings.k3s_ready_timeout
    started = time.monotonic()
    while not await k3s.node_ready(await ctx.session(server_id), name):
        if time.monotonic() - started > timeout:
            raise StepFailed(f"node {name!r} was not Ready within {timeout:.0f}s as seen by the "
                             f"server {server_id!r}; see 'journalctl -u k3s' (server) or "
                             "'journalctl -u k3s-agent' (agent) on the node")
        await asyncio.sleep(POLL)
    member = cluster.member(ctx.job.node_id)
    if member is None or member.state != model.JOINED:
        ip = (await ctx.target(ctx.job.node_id)).host
        status = await ctx.store.nodes.status(ctx.job.node_id) or ""
        await ctx.store.clusters.member_joined(cluster.id, ctx.job.node_id, ip, status)
    return f"{name} is Ready (seen by {server_id}) after {time.monotonic() - started:.1f}s"


async def step_install_agent(ctx: Context) -> str:
    session = await ctx.session()
    settings = ctx.settings
    # The node's own Redis user (rotated on every install): the Pi never holds more than
    # its own keys.
    credentials = await ctx.agents.issue(ctx.job.node_id)
    ctx.redact.add(credentials.redis_url)
    ctx.redact.add(urlsplit(credentials.redis_url).password or "")
    await agent_unit.install(session, node_id=ctx.job.node_id,
                             redis_url=credentials.redis_url,
                             redis_prefix=settings.redis_prefix,
                             install_command=settings.agent_install_command)
    return f"pi-agent installed and started ({agent_unit.UNIT_PATH})"


async def step_report(ctx: Context) -> str:
    await ctx.set_member(state=model.JOINED)
    cluster = await ctx.cluster()
    await ctx.store.nodes.transition(
        ctx.job.node_id, node_status.READY, f"K3s {ctx.job.role} of cluster {cluster.name}",
        expected=[node_status.PROVISIONING],
        fields={"cluster_id": cluster.id, "cluster_role": ctx.job.role})
    if all(m.state == model.JOINED for m in cluster.members) and cluster.status != "ready":
        await ctx.store.clusters.mark_ready(cluster.id)
    return f"{ctx.job.node_id} is a K3s {ctx.job.role} of {cluster.name} with pi-agent running"


# --- removal -----------------------------------------------------------------------------


async def _other_server(ctx: Context, cluster: Cluster) -> str | None:
    if cluster.status == "deleting":
        return None  # every node is leaving: draining onto the others would be pointless
    candidates = [m.node_id for m in cluster.servers()
                  if m.node_id != ctx.job.node_id and m.state == model.JOINED]
    if cluster.server_node in candidates:
        return cluster.server_node
    return candidates[0] if candidates else None


def _node_name(ctx: Context, cluster: Cluster) -> str:
    member = cluster.member(ctx.job.node_id)
    return (member.hostname if member and member.hostname else
            ctx.job.facts.get("hostname") or ctx.job.node_id)


async def step_drain(ctx: Context) -> str:
    cluster = await ctx.cluster()
    server = await _other_server(ctx, cluster)
    if server is None:
        return "skipped: no other server stays to drain this node onto"
    name = _node_name(ctx, cluster)
    await k3s.drain(await ctx.session(server), name)
    return f"{name} drained (on {server})"


async def step_delete_node(ctx: Context) -> str:
    cluster = await ctx.cluster()
    server = await _other_server(ctx, cluster)
    if server is None:
        return "skipped: no other server stays to delete this node from"
    name = _node_name(ctx, cluster)
    await k3s.delete_node(await ctx.session(server), name)
    return f"{name} deleted from the cluster (on {server})"


async def step_uninstall(ctx: Context) -> str:
    await k3s.uninstall(await ctx.session(), ctx.job.role)
    return "K3s uninstalled from the node"


async def step_removed(ctx: Context) -> str:
    node_id = ctx.job.node_id
    target = await ctx.target(node_id)
    status = await ctx.store.nodes.status(node_id) or ""
    try:
        removal = await ctx.store.clusters.remove_member(ctx.job.cluster_id, node_id,
                                                         target.host, status)
    except ConflictError:
        raise StepFailed("the cluster record kept changing; retry the job") from None
    if removal is None:
        raise StepFailed(f"cluster {ctx.job.cluster_id!r} no longer exists")
    cluster, deleted = removal
    gone = " (the cluster is deleted)" if deleted else ""
    return f"{node_id} removed from {cluster.name}{gone}"


PROVISION: dict[str, StepFn] = {
    "connect": step_connect, "preflight": step_preflight, "cgroups": step_cgroups,
    "install_k3s": step_install_k3s, "wait_ready": step_wait_ready,
    "install_agent": step_install_agent, "report": step_report,
}
DEPROVISION: dict[str, StepFn] = {
    "drain": step_drain, "delete_node": step_delete_node, "uninstall": step_uninstall,
    "report": step_removed,
}
