"""Reads this node's command stream (consumer group) and reconciles declared pins.

Commands are acknowledged in the same transaction that reports their effect, so a command
whose agent died mid-way stays pending and is applied once after the restart. Declared state
for the reconciler comes from this node's own ``desired`` hash, the one shared-state key the
controller lets this agent read.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from redis.exceptions import ResponseError

from agent.gpio.manager import PinManager
from agent.outbox import REFUSED_BACKOFF, Link, Outbox
from common import gpio, reports
from common.keys import AGENT_GROUP, COMMAND_FIELD, Keys
from common.redis_client import UNAVAILABLE, Redis

logger = logging.getLogger(__name__)

READ_COUNT = 32
BLOCK_MS = 5000


class CommandConsumer:
    def __init__(self, redis: Redis, keys: Keys, node_id: str, manager: PinManager,
                 outbox: Outbox, link: Link) -> None:
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._stream = keys.commands(node_id)
        self._manager = manager
        self._outbox = outbox
        self._link = link
        self.applied = 0

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, AGENT_GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._ensure_group()
                await self._consume()
            except UNAVAILABLE as err:
                self._link.failed(err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, REFUSED_BACKOFF if self._link.refused else 2.0)

    async def _consume(self) -> None:
        # Our own pending entries first: commands read but not acked before a crash.
        position = "0"
        while True:
            reply = await self._redis.xreadgroup(
                AGENT_GROUP, self._node_id, {self._stream: position}, count=READ_COUNT,
                block=None if position != ">" else BLOCK_MS)
            self._link.set(True)
            entries = reply[0][1] if reply else []
            if position != ">":
                if not entries:
                    position = ">"
                    continue
                position = entries[-1][0].decode()
            for entry_id, fields in entries:
                await self._handle(entry_id, fields)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        ack = entry_id
        try:
            cmd = gpio.decode_command(fields[COMMAND_FIELD])
        except (KeyError, msgspec.DecodeError) as err:
            logger.error("undecodable command %s rejected: %s", entry_id.decode(), err)
            self._outbox.emit(reports.CommandRejected(
                entry_id=entry_id.decode(), reason=str(err),
                raw=fields.get(COMMAND_FIELD, b"")[:1024]), ack)
            return
        if cmd.op == "release":
            await self._manager.release(cmd.resource, ack)
        else:
            await self._manager.apply(cmd.resource, cmd.spec, cmd.generation, actor=cmd.actor,
                                      request_id=cmd.request_id, reason="command", ack=ack)
        self.applied += 1


class Reconciler:
    """Drives every pin this node owns to the state declared in Redis, and reports drift."""

    def __init__(self, redis: Redis, keys: Keys, node_id: str, manager: PinManager,
                 link: Link, interval: float) -> None:
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._manager = manager
        self._link = link
        self._interval = interval
        self._wakeup = asyncio.Event()
        self._wakeup.set()
        self._resync = False
        link.listen(lambda up: self._wakeup.set() if up else None)
        manager.backend.on_reconnect(self.resync)

    def resync(self) -> None:
        """Re-apply every pin in full at the next pass (the backend lost its hardware)."""
        self._resync = True
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self.reconcile()
            except UNAVAILABLE as err:
                self._link.failed(err)

    async def declared(self) -> dict[str, gpio.GpioCommand]:
        raw = await self._redis.hgetall(self._keys.desired(self._node_id))
        pins: dict[str, gpio.GpioCommand] = {}
        for name, value in sorted(raw.items()):
            try:
                cmd = gpio.decode_command(value)
            except msgspec.DecodeError as err:
                logger.error("declared GPIO resource %s is unreadable: %s", name.decode(), err)
                continue
            pins[cmd.resource] = cmd
        return pins

    async def reconcile(self) -> None:
        declared = await self.declared()
        resync, self._resync = self._resync, False
        for name in list(self._manager.owned):
            if name not in declared:
                await self._manager.release(name)
        for name, item in declared.items():
            owned = self._manager.owned.get(name)
            spec, generation = item.spec, item.generation
            if resync and owned is not None:
                await self._manager.apply(name, spec, generation, actor=owned.actor,
                                          request_id=owned.request_id,
                                          reason="re-applied: GPIO backend reconnected",
                                          force=True)
            elif owned is None or owned.generation < generation:
                # Carries who asked for this state, so the event names them even when the
                # command itself is then skipped as already applied.
                await self._manager.apply(name, spec, generation, actor=item.actor,
                                          request_id=item.request_id, reason="reconcile")
            elif owned.generation > generation:
                # The store went back: a Redis failover lost the command this pin follows
                # (or the resource was made anew). What the store holds is the truth.
                logger.warning("GPIO %s: the store declares an older state (generation %d) "
                               "than this pin follows (%d); re-applying the store's", name,
                               generation, owned.generation)
                await self._manager.apply(name, spec, generation, actor=item.actor,
                                          request_id=item.request_id,
                                          reason="re-applied: the store went back",
                                          force=True)
            elif await self._manager.drift(name):
                logger.warning("GPIO %s drifted from its declared state; corrected", name)
                await self._manager.apply(name, spec, generation, actor=owned.actor,
                                          request_id=owned.request_id, reason="drift corrected",
                                          force=True)
