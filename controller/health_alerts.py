"""Health thresholds: a warning once when a node crosses one, a recovery message when it clears.

Decided here, from the ``node.health.reported`` events the feed hands over, by one replica
under a lease. Which alerts are active is kept by ``store.alerts`` and changes in the same
transaction as its ``system.log.created`` event, under WATCH: a replica taking over neither
repeats a warning nor forgets to send the recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import events
from common.errors import ConflictError
from common.tasks import checkpoint
from controller.store import Store

logger = logging.getLogger(__name__)

SOURCE = "health"


@dataclass(frozen=True, slots=True)
class Thresholds:
    temp_warning: float = 80.0
    temp_hysteresis: float = 5.0
    disk_warning: float = 90.0


def _number(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _flag(metrics: dict[str, Any], name: str) -> bool | None:
    value = metrics.get(name)
    return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Verdict:
    condition: str
    alerting: bool
    message: str


def evaluate(node_id: str, metrics: dict[str, Any], active: set[str],
             limits: Thresholds) -> list[Verdict]:
    """What each known condition says now; conditions without data say nothing."""
    verdicts: list[Verdict] = []
    temp = _number(metrics, "cpu_temp_c")
    if temp is not None:
        was = "temperature" in active
        hot = temp >= (limits.temp_warning - limits.temp_hysteresis if was
                       else limits.temp_warning)
        verdicts.append(Verdict("temperature", hot, (
            f"{node_id}: CPU temperature {temp:.1f} C (warning at {limits.temp_warning:g} C)"
            if hot else f"{node_id}: CPU temperature back to {temp:.1f} C")))
    under = _flag(metrics, "under_voltage")
    if under is not None:
        verdicts.append(Verdict("under_voltage", under, (
            f"{node_id}: under-voltage detected; check the power supply" if under
            else f"{node_id}: supply voltage back to normal")))
    throttled = _flag(metrics, "throttled")
    if throttled is not None:
        verdicts.append(Verdict("throttled", throttled, (
            f"{node_id}: CPU is throttled" if throttled
            else f"{node_id}: CPU no longer throttled")))
    used = _number(metrics, "disk_percent")
    if used is not None:
        full = used >= limits.disk_warning
        verdicts.append(Verdict("disk", full, (
            f"{node_id}: root file system {used:.0f}% full (warning at "
            f"{limits.disk_warning:g}%)" if full
            else f"{node_id}: root file system back to {used:.0f}% full")))
    return verdicts


class HealthAlerts:
    def __init__(self, store: Store, listeners: list[Callable[[events.Event], None]],
                 limits: Thresholds) -> None:
        self._store = store
        self._listeners = listeners
        self._limits = limits
        self._pending: dict[str, dict[str, Any]] = {}
        self._wakeup = asyncio.Event()
        self._active: dict[str, set[str]] = {}
        self._unknown_logged: set[str] = set()

    def _on_event(self, event: events.Event) -> None:
        if event.type != events.NODE_HEALTH_REPORTED or event.node_id is None:
            return
        metrics = event.data.get("metrics")
        if isinstance(metrics, dict):
            # Latest report per node only: a backlog never grows beyond one entry per node.
            self._pending[event.node_id] = metrics
            self._wakeup.set()

    async def run(self) -> None:
        self._active = {}
        for alert in await self._store.alerts.active():
            self._active.setdefault(alert.node_id, set()).add(alert.condition)
        self._listeners.append(self._on_event)
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    node_id, metrics = self._pending.popitem()
                    await self.consider(node_id, metrics)
                    checkpoint()
        finally:
            self._listeners.remove(self._on_event)

    async def consider(self, node_id: str, metrics: dict[str, Any]) -> None:
        if not await self._store.nodes.exists(node_id):
            if node_id not in self._unknown_logged:
                self._unknown_logged.add(node_id)
                logger.warning("health report from unknown node %r ignored", node_id)
            return
        active = self._active.setdefault(node_id, set())
        for verdict in evaluate(node_id, metrics, active, self._limits):
            if verdict.alerting == (verdict.condition in active):
                continue
            done = await self._transition(node_id, verdict)
            if done is None:
                continue  # not recorded: the next report tries again
            if done:
                logger.log(logging.WARNING if verdict.alerting else logging.INFO, "%s",
                           verdict.message)
            if verdict.alerting:
                active.add(verdict.condition)
            else:
                active.discard(verdict.condition)

    async def _transition(self, node_id: str, verdict: Verdict) -> bool | None:
        """Raise or clear one alert with its log event, once.

        True when this call did, False when it was so already, None when contention won.
        """
        level: events.Level = "warning" if verdict.alerting else "info"
        try:
            return await self._store.alerts.change(
                node_id, verdict.condition, raised=verdict.alerting,
                event=events.system_log_created(level, verdict.message, SOURCE,
                                                node_id=node_id))
        except ConflictError:
            logger.warning("%s: alert for %s not recorded (contention); next report retries",
                           node_id, verdict.condition)
            return None
