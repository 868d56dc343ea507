"""Jobs, steps and clusters: the records the store keeps and the API returns.

A job provisions (or removes) one node and is made of ordered, idempotent steps; it is kept
whole, so a controller that takes over the lease can resume it. A cluster holds its K3s
settings and its members, each with its role and membership state. How they are stored is
the store's business (``controller/store/jobs.py``, ``controller/store/clusters.py``).
"""

from __future__ import annotations

import time
import uuid
from typing import Final, Literal

import msgspec

JobKind = Literal["provision", "deprovision"]
Role = Literal["server", "agent"]

# Job statuses. "interrupted" is final: the job was cut short too often by controller
# restarts; re-running it resumes where it stopped.
QUEUED: Final = "queued"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
INTERRUPTED: Final = "interrupted"
ACTIVE: Final = (QUEUED, RUNNING)
INTERRUPTIONS_LIMIT: Final = 3
"""Controller restarts a running job may live through before it is marked interrupted."""
FINISHED: Final = (SUCCEEDED, FAILED, INTERRUPTED)

# Step statuses.
PENDING: Final = "pending"
DONE: Final = "done"
SKIPPED: Final = "skipped"

PROVISION_STEPS: Final = ("connect", "preflight", "cgroups", "install_k3s", "wait_ready",
                          "install_agent", "report")
DEPROVISION_STEPS: Final = ("drain", "delete_node", "uninstall", "report")

OUTPUT_LIMIT: Final = 8192
"""Bytes of output kept per step (the tail: errors come last)."""

# Membership states of a node in a cluster (``Member.state``).
JOINING: Final = "joining"
JOINED: Final = "joined"
MEMBER_FAILED: Final = "failed"
REMOVING: Final = "removing"


class Step(msgspec.Struct, kw_only=True):
    name: str
    status: str = PENDING
    started_at: float | None = None
    finished_at: float | None = None
    message: str = ""
    output: str = ""

    def append(self, text: str) -> None:
        self.output = (self.output + text)[-OUTPUT_LIMIT:]


class Job(msgspec.Struct, kw_only=True):
    id: str
    kind: JobKind
    node_id: str
    cluster_id: str
    role: Role
    status: str = QUEUED
    steps: list[Step] = []
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    failed_step: str = ""
    attempts: int = 0
    interruptions: int = 0
    facts: dict[str, str] = {}
    """What preflight learnt about the host (hostname, arch, os...): later steps need it
    even when preflight is not re-run on resume."""

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


def new_job(kind: JobKind, node_id: str, cluster_id: str, role: Role) -> Job:
    names = PROVISION_STEPS if kind == "provision" else DEPROVISION_STEPS
    now = time.time()
    return Job(id=f"job-{uuid.uuid4().hex[:12]}", kind=kind, node_id=node_id,
               cluster_id=cluster_id, role=role, steps=[Step(name=n) for n in names],
               created_at=now, updated_at=now)


encode_job = msgspec.json.Encoder().encode
decode_job = msgspec.json.Decoder(Job).decode


class Member(msgspec.Struct, kw_only=True):
    node_id: str
    role: str
    state: str
    ip_address: str = ""
    hostname: str = ""
    job_id: str = ""


class Cluster(msgspec.Struct, kw_only=True):
    id: str
    name: str
    status: str = "provisioning"
    version: str = ""
    channel: str = ""
    disable: list[str] = []
    tls_sans: list[str] = []
    force_even: bool = False
    server_node: str = ""
    """The server whose address agents and later servers join (the first server)."""
    created_at: float = 0.0
    updated_at: float = 0.0
    members: list[Member] = []

    def servers(self) -> list[Member]:
        return [m for m in self.members if m.role == "server"]

    def member(self, node_id: str) -> Member | None:
        for m in self.members:
            if m.node_id == node_id:
                return m
        return None

