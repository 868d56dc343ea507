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


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "pic:"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

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
        return f"{self.prefix}cmd:{node_id}"

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
