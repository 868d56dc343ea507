"""Drives this node's pins to their declared state and reports what they really are.

Desired state comes from commands and from the node's declared resources (reconcile);
what a pin really is goes out as a ``GpioReport`` in one transaction with the command's
XACK, so a command is acknowledged exactly when its effect is reported. The controller turns
the report into the resource's status and ``gpio.state.changed``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import msgspec

from agent.gpio.backend import BackendError, GpioBackend
from agent.outbox import Ack, Outbox
from common import events, reports
from common.gpio import SAFE_STATE_MODES, GpioSpec, GpioStatus, Level

logger = logging.getLogger(__name__)

@dataclass(slots=True)
class Owned:
    spec: GpioSpec
    generation: int
    actor: str | None = None
    request_id: str | None = None
    level: int | None = None
    """Last physical level seen (inputs) or written (outputs)."""
    duty: float | None = None
    """PWM duty the pin really runs at (the safe one during fail-safe)."""
    failsafe: bool = False


def logical(level: int, active_low: bool) -> Level:
    return "high" if bool(level) != active_low else "low"


def physical(state: Level, active_low: bool) -> int:
    return int((state == "high") != active_low)


def safe_spec(spec: GpioSpec) -> GpioSpec | None:
    """The spec with its safe state in place of the declared one; None if it has none."""
    if spec.safe_state is None or spec.mode not in SAFE_STATE_MODES:
        return None
    if spec.mode == "pwm":
        return msgspec.structs.replace(spec, pwm_duty=100.0 if spec.safe_state == "high" else 0.0)
    return msgspec.structs.replace(spec, state=spec.safe_state)


class PinManager:
    def __init__(self, backend: GpioBackend, outbox: Outbox) -> None:
        self.backend = backend
        self._outbox = outbox
        self._owned: dict[str, Owned] = {}
        self._by_pin: dict[int, str] = {}
        self._lock = asyncio.Lock()

    @property
    def owned(self) -> dict[str, Owned]:
        return self._owned

    async def apply(self, resource: str, spec: GpioSpec, generation: int, *,
                    actor: str | None = None, request_id: str | None = None,
                    reason: str | None = None, ack: Ack | None = None,
                    force: bool = False) -> bool:
        """Drive one resource's pin; report success or the backend's error. True if applied."""
        async with self._lock:
            current = self._owned.get(resource)
            if current is not None and generation <= current.generation and not force:
                # Already applied (the reconciler got there first after a restart) or stale:
                # ack and skip, so a command takes effect, and is reported, exactly once.
                if ack:
                    self._outbox.emit(None, ack)
                return False
            assert spec.pin is not None
            try:
                level, duty = await self._drive(spec, current, reconfigure=force)
            except BackendError as err:
                self._report_error(resource, spec, generation, str(err), actor, request_id, ack)
                return False
            owned = Owned(spec, generation, actor, request_id, level, duty)
            self._owned[resource] = owned
            self._by_pin[spec.pin] = resource
            self._report(resource, owned, reason=reason, ack=ack)
            return True

    async def _drive(self, spec: GpioSpec, current: Owned | None, *,
                     reconfigure: bool = False) -> tuple[int, float | None]:
        """Put the pin in its mode and state; returns (physical level, PWM duty).

        The mode is set only when it changes (or on ``reconfigure``): a state change is
        then one hardware call, not two.
        """
        assert spec.pin is not None
        if current is not None and (current.spec.pin != spec.pin or (
                current.spec.mode == "input" and spec.mode != "input")):
            await self._forget(current)
        same_setup = current is not None and not reconfigure and (
            current.spec.pin, current.spec.mode, current.spec.pull) == (
            spec.pin, spec.mode, spec.pull)
        if spec.mode == "input":
            # Watch before setting the pull: pigpio's client tracks levels from the reports
            # it gets, so a level change it was not told about (the pull) would make it
            # miss the next edge.
            await self.backend.watch(spec.pin, spec.debounce_ms, self._on_edge)
            await self.backend.set_mode(spec.pin, spec.mode, spec.pull)
            return await self.backend.read(spec.pin), None
        if not same_setup:
            await self.backend.set_mode(spec.pin, spec.mode, spec.pull)
        if spec.mode == "pwm":
            duty = spec.pwm_duty or 0.0
            await self.backend.set_pwm(spec.pin, duty, spec.pwm_frequency)
            return int(duty > 0), duty
        if spec.mode == "servo":
            await self.backend.set_servo(spec.pin, spec.servo_pulse_width or 0)
            return int(bool(spec.servo_pulse_width)), None
        level = physical(spec.state or "low", spec.active_low)
        await self.backend.write(spec.pin, level)
        return level, None

    async def _forget(self, owned: Owned) -> None:
        assert owned.spec.pin is not None
        if owned.spec.mode == "input":
            await self.backend.unwatch(owned.spec.pin)
        self._by_pin.pop(owned.spec.pin, None)

    async def release(self, resource: str, ack: Ack | None = None) -> None:
        async with self._lock:
            owned = self._owned.pop(resource, None)
            if owned is not None:
                try:
                    await self._forget(owned)
                except BackendError as err:
                    logger.warning("releasing %s: %s", resource, err)
            if ack:
                self._outbox.emit(None, ack)

    def _status(self, owned: Owned, *, phase: str = "Applied", message: str = "") -> GpioStatus:
        spec = owned.spec
        now = events.now_iso()
        return GpioStatus(
            phase=phase,  # type: ignore[arg-type]
            state=logical(owned.level, spec.active_low) if owned.level is not None else None,
            pwm_duty=owned.duty if spec.mode == "pwm" else None,
            servo_pulse_width=spec.servo_pulse_width if spec.mode == "servo" else None,
            message=message,
            observed_at=now,
            last_changed_at=now,
            last_changed_by=owned.actor,
            request_id=owned.request_id,
            backend=self.backend.name,
            observed_generation=owned.generation,
        )

    def _report(self, resource: str, owned: Owned, *, reason: str | None,
                ack: Ack | None, message: str = "") -> None:
        assert owned.spec.pin is not None
        self._outbox.emit(reports.GpioReport(
            resource=resource, pin=owned.spec.pin, status=self._status(owned, message=message),
            reason=reason), ack)

    def _report_error(self, resource: str, spec: GpioSpec, generation: int, message: str,
                      actor: str | None, request_id: str | None, ack: Ack | None) -> None:
        logger.warning("GPIO %s (BCM %s) could not be applied: %s", resource, spec.pin, message)
        assert spec.pin is not None
        status = GpioStatus(phase="Error", message=message, observed_at=events.now_iso(),
                            last_changed_by=actor, request_id=request_id,
                            backend=self.backend.name, observed_generation=generation)
        self._outbox.emit(reports.GpioReport(resource=resource, pin=spec.pin, status=status,
                                             announce=False), ack)

    def _on_edge(self, pin: int, level: int) -> None:
        resource = self._by_pin.get(pin)
        owned = self._owned.get(resource) if resource else None
        if resource is None or owned is None or owned.level == level:
            return
        owned.level = level
        owned.actor, owned.request_id = None, None
        self._report(resource, owned, reason="input edge", ack=None)

    async def read(self, resource: str) -> Level | None:
        owned = self._owned.get(resource)
        if owned is None or owned.spec.pin is None:
            return None
        return logical(await self.backend.read(owned.spec.pin), owned.spec.active_low)

    async def enter_failsafe(self) -> None:
        """Drive every pin with a safeState to it (the link to Redis is gone)."""
        async with self._lock:
            for resource, owned in self._owned.items():
                safe = safe_spec(owned.spec)
                if safe is None or owned.failsafe:
                    continue
                try:
                    owned.level, owned.duty = await self._drive(safe, owned)
                except BackendError as err:
                    logger.error("fail-safe for %s failed: %s", resource, err)
                    continue
                owned.failsafe = True
                logger.warning("GPIO %s (BCM %s) driven to its safe state %s: no link to Redis",
                               resource, owned.spec.pin, owned.spec.safe_state)
                self._report(resource, owned, reason="failsafe: link to Redis lost",
                             ack=None, message="fail-safe state while the link is down")

    async def leave_failsafe(self) -> None:
        """Back to the declared state once the link returns."""
        async with self._lock:
            for resource, owned in self._owned.items():
                if not owned.failsafe:
                    continue
                try:
                    owned.level, owned.duty = await self._drive(owned.spec, owned)
                except BackendError as err:
                    logger.error("restoring %s after fail-safe failed: %s", resource, err)
                    continue
                owned.failsafe = False
                self._report(resource, owned, reason="failsafe cleared: link restored", ack=None)

    async def drift(self, resource: str) -> bool:
        """Whether an output's real level differs from what was declared."""
        owned = self._owned.get(resource)
        if owned is None or owned.spec.mode != "output" or owned.spec.pin is None:
            return False
        if owned.failsafe:
            return False
        want = physical(owned.spec.state or "low", owned.spec.active_low)
        try:
            return await self.backend.read(owned.spec.pin) != want
        except BackendError:
            return True
