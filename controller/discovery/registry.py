"""From sightings to nodes, once per machine.

A machine is known by aliases: ``mac:``, ``host:`` and ``node:`` (strong: the same value
means the same machine) and ``ip:`` (weak: DHCP hands addresses to others, so it only matches
when nothing stronger is known). The first sighting of a machine records its aliases, the
node (status ``discovered``) and ``node.discovered`` at once, the latter two unless its
agent registered the node already; any later sighting, from any source, address or
controller replica, or after a restart, only adds aliases (``store.discovery``).

What discovery saw and what was wrong with it are kept too, for the API: one summary per
host and the last bad records.
"""

from __future__ import annotations

import logging
import time

from controller.discovery.recognise import Sighting, node_id_for, pi_evidence
from controller.store import Store
from controller.store.discovery import (
    Aliases,
    DiscoveredHost,
    DiscoveredNode,
    DiscoveryProblem,
    Recorded,
)

logger = logging.getLogger(__name__)


def aliases(s: Sighting) -> Aliases:
    strong = [f"node:{s.node_id}" if s.node_id else "", f"mac:{s.mac}" if s.mac else "",
              f"host:{s.hostname}" if s.hostname else ""]
    weak = [f"ip:{s.address}"] if s.address else []
    return Aliases(strong=tuple(a for a in strong if a), weak=tuple(weak))


async def record(store: Store, s: Sighting, *, name: str = "", error: str = "") -> Recorded:
    """Record a sighting of a machine to be kept as a node; node.discovered once."""
    recorded = await store.discovery.record(aliases(s), DiscoveredNode(
        id=node_id_for(s, name), ip_address=s.address, source=s.source, hostname=s.hostname,
        mac=s.mac, model=s.model, arch=s.arch, agent_version=s.agent_version, error=error))
    if recorded.created:
        logger.info("discovered %s at %s (%s, %s)", recorded.node_id, s.address, s.source,
                    pi_evidence(s) or "registered by hand")
    return recorded


async def note_host(store: Store, s: Sighting, *, node_id: str = "") -> None:
    """Keep discovery's view of a host (Pi or not) for GET /api/v1/discovery."""
    evidence = pi_evidence(s)
    await store.discovery.note_host(DiscoveredHost(
        host=s.hostname or s.address, hostname=s.hostname, address=s.address,
        sources=sorted({s.source, *s.sources}), mac=s.mac, model=s.model,
        raspberry_pi=bool(evidence), evidence=evidence, node_id=node_id,
        last_seen=round(time.time(), 3)))


async def problem(store: Store, source: str, subject: str, reason: str) -> None:
    """A bad record or an unanswering address: logged, kept for the API, never raised."""
    logger.warning("discovery (%s): %s: %s", source, subject, reason)
    await store.discovery.add_problem(DiscoveryProblem(
        time=round(time.time(), 3), source=source, subject=subject, reason=reason))
