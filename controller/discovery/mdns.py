"""mDNS browsing: pi-agents (``_pi-agent._tcp``) and stock Raspberry Pi OS hosts, which
avahi announces as ``_ssh._tcp`` and ``_workstation._tcp`` (the latter's instance name ends
in the MAC address: ``raspberrypi [dc:a6:32:01:02:03]``).

Only on the configured interfaces, IPv4 only (avahi also announces link-local IPv6).
Records are turned into sightings here; whatever is wrong with one (no address, a TXT value
that is not text, a node id that is not a DNS label) is reported as a problem and the
browser carries on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from zeroconf import (
    BadTypeInNameException,
    InterfaceChoice,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from common import grammar
from common.tasks import checkpoint
from controller.discovery.recognise import Sighting, normal_mac, short_hostname

logger = logging.getLogger(__name__)

AGENT = "_pi-agent._tcp.local."
SSH = "_ssh._tcp.local."
WORKSTATION = "_workstation._tcp.local."
SERVICE_TYPES = (AGENT, SSH, WORKSTATION)
RESOLVE_MS = 3000
QUEUE_MAX = 1000
"""Records waiting to be resolved; a flood of garbage beyond this is dropped, not hoarded."""

_WORKSTATION_MAC = re.compile(r"\[([0-9A-Fa-f:]{17})\]")

OnSighting = Callable[[Sighting], Awaitable[None]]
OnProblem = Callable[[str, str], Awaitable[None]]


class BadRecord(Exception):
    pass


def _text(props: dict[bytes, bytes | None], key: str, *, required: bool = False) -> str:
    raw = props.get(key.encode())
    if raw is None:
        if required:
            raise BadRecord(f"TXT {key!r} missing")
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord(f"TXT {key!r} is not UTF-8 text") from None


def sighting_from(service_type: str, name: str, server: str | None, addresses: list[str],
                  props: dict[bytes, bytes | None]) -> Sighting:
    """Turn one resolved record into a sighting; raises BadRecord naming what is wrong."""
    if not addresses:
        raise BadRecord("no IPv4 address")
    hostname = short_hostname(server or "")
    source = "mdns:" + service_type.split(".", maxsplit=1)[0].lstrip("_")
    s = Sighting(source=source, address=addresses[0], hostname=hostname)
    if service_type == AGENT:
        node_id = _text(props, "node_id", required=True)
        if not grammar.is_label(node_id):
            raise BadRecord(f"TXT 'node_id' {node_id[:80]!r} is not a node id (a DNS label)")
        s.node_id = node_id
        s.hostname = _text(props, "hostname").lower() or hostname
        s.agent_version = _text(props, "version")
        s.model = _text(props, "model")
        s.arch = _text(props, "arch")
    elif service_type == WORKSTATION:
        found = _WORKSTATION_MAC.search(name)
        if found:
            s.mac = normal_mac(found.group(1))
    return s


class MdnsBrowser:
    def __init__(self, interfaces: Sequence[str], on_sighting: OnSighting,
                 on_problem: OnProblem) -> None:
        self._interfaces = list(interfaces)
        self._on_sighting = on_sighting
        self._on_problem = on_problem
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_MAX)
        self._dropped = 0

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            return
        try:
            self._queue.put_nowait((service_type, name))
        except asyncio.QueueFull:
            self._dropped += 1

    async def run(self) -> None:
        choice: list[str] | InterfaceChoice = self._interfaces or InterfaceChoice.All
        azc = AsyncZeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
        browser = AsyncServiceBrowser(azc.zeroconf, list(SERVICE_TYPES),
                                      handlers=[self._on_change])
        logger.info("browsing mDNS for %s on %s", ", ".join(SERVICE_TYPES),
                    ", ".join(self._interfaces) or "all interfaces")
        try:
            while True:
                service_type, name = await self._queue.get()
                if self._dropped:
                    await self._on_problem("mdns", f"{self._dropped} records dropped: more "
                                           f"than {QUEUE_MAX} waiting")
                    self._dropped = 0
                await self._resolve(azc, service_type, name)
                checkpoint()
        finally:
            await asyncio.shield(browser.async_cancel())
            await asyncio.shield(azc.async_close())

    async def _resolve(self, azc: AsyncZeroconf, service_type: str, name: str) -> None:
        try:
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(azc.zeroconf, RESOLVE_MS):
                await self._on_problem(name, "did not resolve (no SRV/TXT/address answer)")
                return
            s = sighting_from(service_type, name, info.server,
                              info.parsed_addresses(IPVersion.V4Only), info.properties)
        except (BadRecord, BadTypeInNameException, ValueError) as err:
            await self._on_problem(name, str(err))
            return
        await self._on_sighting(s)
