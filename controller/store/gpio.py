"""GPIO resources: the resource records (``pic:gpio:{name}``), the index of names, each
node's pin claims and declared state (``pic:desired:{node}``, the one view of shared state its
agent may read), and the command stream to each node.

A write computes the new resource from the current one read under WATCH (``store.tx``), so
concurrent changes never overwrite each other; a pin is claimed per node under WATCH, so two
resources never hold the same pin even when two requests (or two replicas) race. The
resource, its claim, the node's declared state, the command and the event go in one
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import msgspec
from redis.asyncio.client import Pipeline

from common import events, gpio
from common.errors import ConflictError, NotFoundError, ValidationError
from common.keys import COMMAND_FIELD, COMMAND_STREAM_MAXLEN
from common.redis_client import Redis
from controller.store import tx

if TYPE_CHECKING:
    from controller.store.core import Store

_status_decoder = msgspec.json.Decoder(gpio.GpioStatus)
_status_encoder = msgspec.json.Encoder()

Compute = Callable[[gpio.GpioPin | None], gpio.GpioPin]
"""Given the current resource (None if there is none), the resource to store."""


def with_status(resource: bytes, status: bytes | None) -> gpio.GpioPin:
    """The stored resource with the agent's reported status; Pending until it catches up."""
    pin = gpio.decode_pin(resource)
    reported = _status_decoder.decode(status) if status else gpio.GpioStatus()
    if reported.observed_generation < pin.metadata.generation and reported.phase != "Error":
        reported.phase = "Pending"
        reported.message = reported.message or "waiting for the node's agent to apply it"
    elif reported.phase == "Error" and reported.observed_generation < pin.metadata.generation:
        reported.phase = "Pending"
    pin.status = reported
    return pin


def encode_status(status: gpio.GpioStatus) -> bytes:
    return _status_encoder.encode(status)


class GpioResources:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    # --- reading ---------------------------------------------------------------------

    async def names(self) -> list[str]:
        return sorted(m.decode() for m in await self._redis.smembers(self._keys.gpio_index))

    async def all(self, names: Sequence[str] | None = None) -> list[gpio.GpioPin]:
        names = await self.names() if names is None else names
        if not names:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self._keys.gpio(name), "resource", "status")
            rows = await pipe.execute()
        return [with_status(r[0], r[1]) for r in rows if r[0]]

    async def get(self, name: str) -> gpio.GpioPin | None:
        resource, status = await self._redis.hmget(self._keys.gpio(name), "resource", "status")
        return with_status(resource, status) if resource else None

    # --- writing ---------------------------------------------------------------------

    async def write(self, name: str, compute: Compute, actor: str, request_id: str,
                    action: Literal["created", "updated"]) -> gpio.GpioPin:
        """Create or change a resource: ``compute`` gets the current one read under WATCH
        and returns the new one; generation and creation time are kept here."""
        keys, redis = self._keys, self._redis

        async def body(pipe: Pipeline) -> None:
            stored = await pipe.hget(keys.gpio(name), "resource")
            previous = gpio.decode_pin(stored) if stored else None
            if action == "updated" and previous is None:
                raise NotFoundError("GPIOPin", name)
            pin = compute(previous)
            spec = pin.spec
            assert spec.pin is not None
            if not await redis.sismember(keys.nodes, spec.node_name):
                raise ValidationError("spec.nodeName", f"unknown node {spec.node_name!r}")
            claims_key = keys.gpio_claims(spec.node_name)
            if previous is None or (previous.spec.node_name, previous.spec.pin) != (
                    spec.node_name, spec.pin):
                # Only a new claim needs the node's claims under WATCH: watching them on
                # every change would make changes to different pins of one node collide.
                await pipe.watch(claims_key)
                holder = await pipe.hget(claims_key, str(spec.pin))
                if holder is not None and holder.decode() != name:
                    raise ConflictError("spec.pin", f"BCM {spec.pin} on {spec.node_name} "
                                        f"is already claimed by {holder.decode()!r}")
            pin.metadata.generation = (previous.metadata.generation if previous else 0) + 1
            pin.metadata.creationTimestamp = (
                previous.metadata.creationTimestamp if previous else events.now_iso())
            command = gpio.GpioCommand(op="apply", resource=name, spec=spec,
                                       generation=pin.metadata.generation, actor=actor,
                                       request_id=request_id)
            pipe.multi()
            if previous is not None:
                self._release_claim(pipe, previous, keep=pin)
            pipe.hset(keys.gpio(name), mapping={
                "resource": gpio.encode_pin(
                    msgspec.structs.replace(pin, status=gpio.GpioStatus())),
                # Who asked for the declared state: the agent's reconciler reports it.
                "actor": actor, "request_id": request_id})
            pipe.sadd(keys.gpio_index, name)
            pipe.hset(claims_key, str(spec.pin), name)
            pipe.hset(keys.desired(spec.node_name), name, gpio.encode_command(command))
            self._command(pipe, spec.node_name, command)
            self._store.stage_event(pipe, events.gpio_resource_changed(
                name, spec.node_name, action, actor=actor, request_id=request_id))

        await tx.transact(redis, [keys.gpio(name)], body, what=f"GPIOPin {name!r}",
                          confirm=self._store.confirm)
        stored_pin = await self.get(name)
        assert stored_pin is not None
        return stored_pin

    async def delete(self, name: str, actor: str, request_id: str) -> None:
        keys = self._keys

        async def body(pipe: Pipeline) -> None:
            stored = await pipe.hget(keys.gpio(name), "resource")
            if stored is None:
                raise NotFoundError("GPIOPin", name)
            previous = gpio.decode_pin(stored)
            pipe.multi()
            self._release_claim(pipe, previous, keep=None)
            pipe.delete(keys.gpio(name))
            pipe.srem(keys.gpio_index, name)
            self._store.stage_event(pipe, events.gpio_resource_changed(
                name, previous.spec.node_name, "deleted", actor=actor,
                request_id=request_id))

        await tx.transact(self._redis, [keys.gpio(name)], body, what=f"GPIOPin {name!r}",
                          confirm=self._store.confirm)

    def _release_claim(self, pipe: Pipeline, previous: gpio.GpioPin,
                       keep: gpio.GpioPin | None) -> None:
        old = previous.spec
        moved = keep is None or (old.node_name, old.pin) != (keep.spec.node_name, keep.spec.pin)
        if moved:
            pipe.hdel(self._keys.gpio_claims(old.node_name), str(old.pin))
        if keep is None or old.node_name != keep.spec.node_name:
            pipe.hdel(self._keys.desired(old.node_name), previous.metadata.name)
            self._command(pipe, old.node_name, gpio.GpioCommand(
                op="release", resource=previous.metadata.name, spec=old,
                generation=previous.metadata.generation))

    def _command(self, pipe: Pipeline, node_id: str, cmd: gpio.GpioCommand) -> None:
        pipe.xadd(self._keys.commands(node_id), {COMMAND_FIELD: gpio.encode_command(cmd)},
                  maxlen=COMMAND_STREAM_MAXLEN, approximate=True)

    async def rebuild_desired(self) -> int:
        """Fill in nodes' ``desired`` hashes from the resources where an entry is missing
        (every write above keeps them in step; this covers data from before they existed).
        """
        redis, keys = self._redis, self._keys
        names = await self.names()
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(keys.gpio(name), "resource", "actor", "request_id")
            rows = await pipe.execute()
        async with redis.pipeline(transaction=False) as pipe:
            for name, (raw, actor, request_id) in zip(names, rows, strict=True):
                if raw is None:
                    continue
                pin = gpio.decode_pin(raw)
                pipe.hsetnx(keys.desired(pin.spec.node_name), name, gpio.encode_command(
                    gpio.GpioCommand(op="apply", resource=name, spec=pin.spec,
                                     generation=pin.metadata.generation,
                                     actor=actor.decode() if actor else None,
                                     request_id=request_id.decode() if request_id else None)))
            return sum(bool(r) for r in await pipe.execute())
