"""Is this machine a Raspberry Pi? Sightings, and what gives a Pi away."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

PI_OUIS: Final = frozenset({
    "b8:27:eb",  # Raspberry Pi Foundation (Pi 1-3)
    "dc:a6:32",  # Raspberry Pi Trading (Pi 4)
    "e4:5f:01",  # Raspberry Pi Trading (Pi 4, 400)
    "28:cd:c1",  # Raspberry Pi Trading (Pi Zero 2, Pico W)
    "d8:3a:dd",  # Raspberry Pi Trading (Pi 5)
    "2c:cf:67",  # Raspberry Pi (Trading) Ltd (Pi 5)
    "88:a2:9e",  # Raspberry Pi (Trading) Ltd
})
"""MAC vendor prefixes (IEEE OUI registry) of Raspberry Pi boards' own network chips."""

_STOCK_HOSTNAME = re.compile(r"^raspberrypi(-\d+)?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
"""Node ids are DNS labels, as Kubernetes node names are."""


@dataclass(slots=True)
class Sighting:
    """One source's view of one machine."""

    source: str
    address: str
    hostname: str = ""
    node_id: str = ""
    mac: str = ""
    model: str = ""
    arch: str = ""
    agent_version: str = ""
    banner: str = ""
    sources: set[str] = field(default_factory=set)

    def merge(self, other: Sighting) -> None:
        """Fold another record of the same host (e.g. _workstation into _ssh) into this one."""
        self.sources |= {other.source, *other.sources}
        for name in ("address", "hostname", "node_id", "mac", "model", "arch",
                     "agent_version", "banner"):
            if not getattr(self, name) and getattr(other, name):
                setattr(self, name, getattr(other, name))


def normal_mac(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    return mac if _MAC.match(mac) else ""


def short_hostname(server: str) -> str:
    """``raspberrypi.local.`` -> ``raspberrypi``."""
    name = server.strip().rstrip(".")
    if name.endswith(".local"):
        name = name[: -len(".local")]
    return name.lower()


def pi_evidence(s: Sighting) -> str:
    """Why this looks like a Pi ("" when nothing says so)."""
    if s.node_id:
        return "runs pi-agent"
    if s.model.startswith("Raspberry Pi"):
        return f"model {s.model!r}"
    if s.mac and s.mac[:8] in PI_OUIS:
        return f"MAC vendor prefix {s.mac[:8]}"
    if _STOCK_HOSTNAME.match(s.hostname):
        return f"hostname {s.hostname!r}"
    if "raspbian" in s.banner.lower():
        return "SSH banner says Raspbian"
    return ""


def node_id_for(s: Sighting, name: str = "") -> str:
    """A node id for a new machine: the name given, the agent's id, the hostname, or the IP."""
    for candidate in (name, s.node_id, s.hostname):
        cleaned = re.sub(r"[^a-z0-9-]+", "-", candidate.lower()).strip("-")[:63].strip("-")
        if cleaned:
            return cleaned
    return "node-" + re.sub(r"[^0-9a-f]+", "-", s.address.lower()).strip("-")
