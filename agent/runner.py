"""The agent process: wires the parts, owns their tasks, shuts down cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from agent import sysinfo
from agent.commands import CommandConsumer, Reconciler
from agent.gpio.backend import GpioBackend
from agent.gpio.manager import PinManager
from agent.gpio.sim import SimBackend
from agent.health import HealthCollector, HealthReporter
from agent.logbridge import EventLogHandler
from agent.node import NodePresence
from agent.outbox import Link, Outbox
from agent.settings import AgentSettings
from common import redis_client
from common.keys import Keys
from common.settings import describe
from common.tasks import TaskOwner
from common.tasks import stop as stop_task

logger = logging.getLogger(__name__)

STOP_FLUSH_SECONDS = 3.0


def make_backend(settings: AgentSettings) -> GpioBackend:
    if settings.gpio == "sim":
        return SimBackend(input_interval=settings.sim_input_interval)
    if settings.gpio == "pigpio":
        from agent.gpio.pigpio_backend import PigpioBackend

        return PigpioBackend(settings.pigpio_host, settings.pigpio_port)
    if settings.gpio == "rgpio":
        from agent.gpio.rgpio_backend import RgpioBackend

        return RgpioBackend(settings.rgpio_host, settings.rgpio_port, chip=settings.rgpio_chip)
    raise ValueError(f"unknown GPIO backend {settings.gpio!r}: use sim, pigpio or rgpio")


class Agent:
    def __init__(self, settings: AgentSettings, backend: GpioBackend | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.backend = backend or make_backend(settings)
        self.facts = sysinfo.collect(node_id=settings.node_id, sysroot=settings.sysroot,
                                     hostname=settings.hostname, address=settings.address,
                                     gpio_backend=self.backend.name)
        self.node_id = self.facts.node_id
        self.redis = redis_client.connect(settings.redis_target(), ca_file=settings.redis_ca_file)
        self.link = Link()
        self.outbox = Outbox(self.redis, self.keys, self.node_id, self.link,
                             size=settings.outbox_size)
        self.pins = PinManager(self.backend, self.outbox)
        self.presence = NodePresence(self.redis, self.keys, self.facts, self.outbox, self.link,
                                     settings.heartbeat_interval)
        self.commands = CommandConsumer(self.redis, self.keys, self.node_id, self.pins,
                                        self.outbox, self.link)
        self.reconciler = Reconciler(self.redis, self.keys, self.node_id, self.pins, self.link,
                                     settings.reconcile_interval)
        self.health = HealthReporter(HealthCollector(settings.sysroot), self.outbox,
                                     interval=settings.health_interval)
        self._tasks = TaskOwner()
        self._log_handler = EventLogHandler(self.outbox)
        self._failsafe_timer: asyncio.TimerHandle | None = None
        self._failsafe_task: asyncio.Task[None] | None = None

    def _on_link(self, up: bool) -> None:
        loop = asyncio.get_running_loop()
        if self._failsafe_timer is not None:
            self._failsafe_timer.cancel()
            self._failsafe_timer = None
        if up:
            self._run_soon(self.pins.leave_failsafe(), "leave fail-safe")
        else:
            self._failsafe_timer = loop.call_later(
                self.settings.failsafe_after,
                lambda: self._run_soon(self.pins.enter_failsafe(), "enter fail-safe"))

    def _run_soon(self, coro: object, name: str) -> None:
        # One at a time, owned here and awaited on shutdown.
        async def chained(previous: asyncio.Task[None] | None) -> None:
            if previous is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await previous
            await coro  # type: ignore[misc]

        self._failsafe_task = asyncio.create_task(chained(self._failsafe_task), name=name)

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("pi-agent %s starting as node %s (%s, GPIO backend %s); settings %s",
                    self.facts.agent_version, self.node_id, self.facts.model, self.backend.name,
                    describe(self.settings))
        logging.getLogger().addHandler(self._log_handler)
        self.link.listen(self._on_link)
        try:
            await self.backend.open()
            self._tasks.start("outbox", self.outbox.run)
            self.presence.announce_started()
            self._tasks.start("heartbeat", self.presence.heartbeat)
            self._tasks.start("command consumer", self.commands.run)
            self._tasks.start("reconciler", self.reconciler.run)
            self._tasks.start("health reporter", self.health.run)
            if self.settings.mdns:
                from agent.mdns import Advertiser

                advertiser = Advertiser(self.facts, self.settings.mdns_interfaces)
                self._tasks.start("mdns advertiser", advertiser.run)
            await stop.wait()
            logger.info("stopping: reporting offline")
            self.presence.announce_stopping("agent stopped")
            if not await self.outbox.drained(STOP_FLUSH_SECONDS):
                logger.warning("stopping with %d events not yet in Redis", len(self.outbox))
        finally:
            logging.getLogger().removeHandler(self._log_handler)
            if self._failsafe_timer is not None:
                self._failsafe_timer.cancel()
            await self._tasks.close()
            if self._failsafe_task is not None:
                await stop_task(self._failsafe_task)
            await self.backend.close()
            await self.redis.aclose()


async def serve(settings: AgentSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Agent(settings).run(stop)
