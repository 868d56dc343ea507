"""The discovery duty (mDNS browser and optional subnet scan) and manual registration."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import ip_network

from common import grammar
from common.errors import ConflictError, ValidationError
from common.tasks import TaskOwner, checkpoint
from controller.discovery import registry, scan
from controller.discovery.mdns import MdnsBrowser
from controller.discovery.recognise import Sighting, pi_evidence
from controller.settings import ControllerSettings
from controller.store import Store

logger = logging.getLogger(__name__)

HOSTS_REMEMBERED = 4096
"""Hosts whose records are merged in memory; a LAN rarely has more, a flood is cut."""
class Discovery:
    def __init__(self, store: Store, settings: ControllerSettings) -> None:
        self._store = store
        self._settings = settings
        self._hosts: OrderedDict[str, Sighting] = OrderedDict()

    async def run(self) -> None:
        tasks = TaskOwner()
        if self._settings.discovery:
            browser = MdnsBrowser(self._settings.discovery_interfaces, self.seen,
                                  self._problem)
            tasks.start("mdns browser", browser.run)
        if self._settings.scan_subnet:
            tasks.start("subnet scan", self._scan_forever)
        try:
            await asyncio.Event().wait()
        finally:
            await tasks.close()

    async def _problem(self, subject: str, reason: str) -> None:
        await registry.problem(self._store, "mdns", subject, reason)

    async def seen(self, s: Sighting) -> None:
        """Merge a sighting with earlier records of its host; record the host once a Pi."""
        key = s.hostname or s.address
        merged = self._hosts.pop(key, None)
        if merged is None:
            merged = dataclasses.replace(s, sources={s.source})
        else:
            merged.merge(s)
            merged.address = s.address  # the latest answer wins: addresses move
        self._hosts[key] = merged
        while len(self._hosts) > HOSTS_REMEMBERED:
            self._hosts.popitem(last=False)
        node_id = ""
        if pi_evidence(merged):
            recorded = await registry.record(self._store,
                                             dataclasses.replace(merged, source=s.source))
            node_id = recorded.node_id
        await registry.note_host(self._store, merged, node_id=node_id)

    async def _scan_forever(self) -> None:
        settings = self._settings
        try:
            subnet = ip_network(settings.scan_subnet, strict=False)
        except ValueError as err:
            await registry.problem(self._store, "scan", settings.scan_subnet, str(err))
            return
        if not any(subnet.version == n.version and subnet.subnet_of(n)  # type: ignore[arg-type]
                   for n in grammar.networks(tuple(settings.node_networks),
                                             "--node-networks")):
            await registry.problem(self._store, "scan", settings.scan_subnet,
                                   "outside the node networks (PIC_NODE_NETWORKS): not scanned")
            return
        while True:
            try:
                found = await scan.sweep(settings.scan_subnet, max_hosts=settings.scan_max_hosts,
                                         timeout=settings.ssh_probe_timeout)
            except ValueError as err:
                await registry.problem(self._store, "scan", settings.scan_subnet, str(err))
                return
            logger.info("subnet scan of %s: %d hosts answer on port 22", settings.scan_subnet,
                        len(found))
            for s in found:
                await self.seen(s)
            checkpoint()
            await asyncio.sleep(settings.scan_interval)


@dataclass(frozen=True, slots=True)
class Registration:
    node_id: str
    created: bool
    reachable: bool
    banner: str
    error: str


def validate(address: object, name: object) -> tuple[str, str]:
    if not isinstance(address, str) or not address.strip():
        raise ValidationError("address", "an IP address or host name is required")
    checked = grammar.host(address.strip())
    if checked is None:
        raise ValidationError("address", "not an IP address or host name")
    address = checked
    if name is None:
        name = ""
    if not isinstance(name, str) or (name and not grammar.is_label(name)):
        raise ValidationError("name", "a DNS label: 1-63 lower-case letters, digits or '-', "
                              "not starting or ending with '-'")
    return address, name


async def check_network(address: str, allowed: list[str]) -> None:
    """ValidationError unless ``address`` (or every address a host name resolves to) is
    inside ``allowed``: an operator cannot make the controller probe any host anywhere."""
    nets = grammar.networks(tuple(allowed), "--node-networks")
    if grammar.ip(address) is not None:
        found = [address]
    else:
        try:
            async with asyncio.timeout(3):
                infos = await asyncio.get_running_loop().getaddrinfo(address, 22)
        except (OSError, TimeoutError):
            raise ValidationError("address", f"{address} does not resolve") from None
        found = sorted({str(info[4][0]) for info in infos})
    for each in found:
        if not grammar.within(each, nets):
            raise ValidationError("address", f"{each} is outside the node networks "
                                             "(PIC_NODE_NETWORKS)")


async def register(store: Store, address: str, name: str, timeout: float) -> Registration:
    """Register a machine by address; an address that does not answer is kept, with the error.
    """
    if name:
        existing = await store.nodes.get(name)
        if existing is not None and existing.ip_address != address:
            raise ConflictError("name", f"a node named {name!r} exists already at "
                                f"{existing.ip_address or 'an unknown address'}")
    probe = await scan.probe_ssh(address, timeout)
    s = Sighting(source="manual", address=address, banner=probe.banner,
                 mac=scan.mac_from_arp(address) if probe.reachable else "")
    recorded = await registry.record(store, s, name=name, error=probe.error)
    if not probe.reachable:
        await registry.problem(store, "manual", address, probe.error)
    if not recorded.created:
        await store.nodes.update(recorded.node_id, {"error": probe.error})
    return Registration(recorded.node_id, recorded.created, probe.reachable, probe.banner,
                        probe.error)
