"""SSH probes: one address (manual registration) or a bounded subnet sweep (optional).

A probe opens TCP port 22, reads the SSH banner (``SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3``;
older Raspberry Pi OS says ``Raspbian``) and closes: no login, no key exchange. After a
connection the kernel knows the peer's MAC when it is on the same link, which
``/proc/net/arp`` gives away, and with it the vendor prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from controller.discovery.recognise import Sighting, normal_mac

logger = logging.getLogger(__name__)

SSH_PORT = 22
CONCURRENCY = 64
BANNER_MAX = 255
ARP_TABLE = Path("/proc/net/arp")


@dataclass(frozen=True, slots=True)
class Probe:
    address: str
    reachable: bool
    banner: str = ""
    error: str = ""


async def probe_ssh(address: str, timeout: float, port: int = SSH_PORT) -> Probe:
    """Whether ``address`` accepts on the SSH port; never raises for an unanswering host."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
    except TimeoutError:
        return Probe(address, False, error=f"port {port} did not answer within {timeout:g}s")
    except OSError as err:
        return Probe(address, False, error=f"port {port}: {err.strerror or err}")
    banner = ""
    try:
        async with asyncio.timeout(timeout):
            line = await reader.readline()
        banner = line[:BANNER_MAX].decode("ascii", "replace").strip()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return Probe(address, True, banner=banner)


def mac_from_arp(address: str, table: Path = ARP_TABLE) -> str:
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return ""
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[0] == address:
            mac = normal_mac(parts[3])
            return "" if mac == "00:00:00:00:00:00" else mac
    return ""


def scan_targets(subnet: str, max_hosts: int) -> list[str]:
    """The addresses to sweep; ValueError for a bad CIDR or one larger than allowed."""
    network = ipaddress.ip_network(subnet, strict=False)
    if network.num_addresses > max_hosts:
        raise ValueError(f"{subnet} has {network.num_addresses} addresses, more than the "
                         f"{max_hosts} allowed (scan_max_hosts)")
    return [str(a) for a in network.hosts()]


async def sweep(subnet: str, *, max_hosts: int, timeout: float) -> list[Sighting]:
    """Sightings of every address in ``subnet`` that answers on port 22."""
    targets = scan_targets(subnet, max_hosts)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(address: str) -> Probe:
        async with gate:
            return await probe_ssh(address, timeout)

    # gather cancels every probe if the sweep is cancelled: none outlives the duty.
    probes = await asyncio.gather(*(one(a) for a in targets))
    return [Sighting(source="scan", address=p.address, banner=p.banner,
                     mac=mac_from_arp(p.address)) for p in probes if p.reachable]
