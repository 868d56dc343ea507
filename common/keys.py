"""Redis key and stream names, in one place.

Every state change is written in one transaction with its event on the events stream,
so with Redis Cluster all keys must share a slot: set the prefix to a hash tag such as
``{pic}:`` and every key below carries it.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENT_FIELD = b"e"
"""Field of an events-stream entry that holds the msgpack envelope."""

COMMAND_FIELD = b"c"
"""Field of a command-stream entry that holds the msgpack command."""

AGENT_GROUP = "agent"
"""Consumer group through which an agent reads its node's command stream."""

INGEST_GROUP = "controller"
"""Consumer group through which the controller reads every agent's ingress stream."""

INGEST_CONSUMER = "ingest"
"""Prefix of the consumer names the ingest shards read as (``ingest-0``...): a shard's name
is the same whichever replica holds its lease, so a new holder first re-reads what the
previous one read but did not acknowledge."""

INGRESS_MAXLEN = 100_000
"""Reports an ingress stream keeps while the controller is away or behind (a day of a busy
agent's reports; the same bound as the events stream's default); the controller deletes
each report once it has been applied, so normally the stream is near empty."""

COMMAND_STREAM_MAXLEN = 10_000
"""Commands a node's command stream keeps (an agent away for long re-reads desired state)."""


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "pic:"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead"

    @property
    def dead_letter_count(self) -> str:
        return f"{self.prefix}dead:count"

    @property
    def nodes(self) -> str:
        """Set of every known node id."""
        return f"{self.prefix}nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def node_metrics(self, node_id: str) -> str:
        return f"{self.prefix}metrics:{node_id}"

    @property
    def heartbeats(self) -> str:
        """Sorted set: node id scored by the time of its last heartbeat (seconds)."""
        return f"{self.prefix}heartbeats"

    def commands(self, node_id: str) -> str:
        """Stream of commands to one node; written by the controller only."""
        return f"{self.prefix}cmd:{node_id}"

    def ingress(self, node_id: str) -> str:
        """Stream of one agent's reports (``common.reports``); written by that agent only."""
        return f"{self.prefix}in:{node_id}"

    def ring(self, node_id: str) -> str:
        """Pub/sub channel on which an agent rings after appending reports (a channel, not a
        key): the controller reads the streams that rang instead of blocking on them all."""
        return f"{self.prefix}ring:{node_id}"

    @property
    def rings(self) -> str:
        """Pattern of every agent's ring channel."""
        return f"{self.prefix}ring:*"

    def alive(self, node_id: str) -> str:
        """String one agent rewrites on every heartbeat; the controller watches it change."""
        return f"{self.prefix}alive:{node_id}"

    def desired(self, node_id: str) -> str:
        """Hash: resource name -> declared GPIO resource of one node; its agent may read it."""
        return f"{self.prefix}desired:{node_id}"

    @property
    def alive_seen(self) -> str:
        """Hash: node id -> the alive value liveness saw last (to notice a change)."""
        return f"{self.prefix}alive-seen"

    @property
    def agents_version(self) -> str:
        """Counter bumped whenever agent credentials are issued or revoked."""
        return f"{self.prefix}agents:version"

    @property
    def agents(self) -> str:
        """Hash: node id -> agent credential record (ACL user, password hash); never readable
        by agents."""
        return f"{self.prefix}agents"

    def agent_user(self, node_id: str) -> str:
        """The Redis ACL user of one node's agent (a user name, not a key)."""
        return f"{self.prefix}agent:{node_id}"

    @property
    def gpio_index(self) -> str:
        """Set of every GPIO resource name."""
        return f"{self.prefix}gpio"

    def gpio(self, name: str) -> str:
        return f"{self.prefix}gpio:{name}"

    def gpio_claims(self, node_id: str) -> str:
        """Hash: BCM pin -> resource name, so one pin is never claimed twice on a node."""
        return f"{self.prefix}gpio-claims:{node_id}"

    @property
    def tokens(self) -> str:
        """Hash: sha256 of an API token -> its record (name, role)."""
        return f"{self.prefix}tokens"

    def session(self, digest: str) -> str:
        return f"{self.prefix}session:{digest}"

    @property
    def clusters(self) -> str:
        return f"{self.prefix}clusters"

    def cluster(self, cluster_id: str) -> str:
        return f"{self.prefix}cluster:{cluster_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    def lease(self, duty: str) -> str:
        return f"{self.prefix}lease:{duty}"

    @property
    def replicas(self) -> str:
        """Sorted set: controller replica id -> when its presence lapses (seconds), so
        replicas share sharded duties evenly."""
        return f"{self.prefix}replicas"

    @property
    def discovered(self) -> str:
        """Hash: machine key (MAC or host id) -> node id, so discovery fires once per machine."""
        return f"{self.prefix}discovered"

    @property
    def discovery_hosts(self) -> str:
        """Hash: host seen by discovery -> JSON summary (sources, addresses, why (not) a Pi)."""
        return f"{self.prefix}discovery:hosts"

    @property
    def discovery_problems(self) -> str:
        """Capped list of bad records discovery met (garbage TXT, unanswering addresses)."""
        return f"{self.prefix}discovery:problems"

    @property
    def health_alerts(self) -> str:
        """Hash: "node_id|condition" -> when the alert was raised, so it fires once."""
        return f"{self.prefix}health-alerts"

    @property
    def job_queue(self) -> str:
        """List of job ids waiting for the provisioner (the lease holder pops them)."""
        return f"{self.prefix}jobs:queue"

    @property
    def host_keys(self) -> str:
        """Hash: "host:port" -> JSON of the SSH host key pinned on first use."""
        return f"{self.prefix}ssh:host-keys"
