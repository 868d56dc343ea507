"""GPIO resources: desired state in Redis, a command to the node's agent, one transaction.

A pin is claimed per node (``gpio-claims:{node}``) under WATCH, so two resources never
hold the same pin even when two requests (or two replicas) race.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgspec
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from common import events, gpio
from common.errors import ConflictError, NotFoundError, ValidationError
from common.keys import COMMAND_FIELD
from controller.state import Store

COMMAND_STREAM_MAXLEN = 10_000
WATCH_RETRIES = 20
"""Optimistic attempts before a write gives up with 409 (many writers on one resource)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class GpioService:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._keys = store.keys

    async def create(self, body: Any, actor: str, request_id: str) -> gpio.GpioPin:
        pin = gpio.parse_pin(_without_status(body))
        return await self._write(pin.metadata.name, pin, actor, request_id, create=True)

    async def replace(self, name: str, body: Any, actor: str, request_id: str) -> gpio.GpioPin:
        body = _without_status(body)
        if isinstance(body, dict):
            body.setdefault("metadata", {}).setdefault("name", name)
        pin = gpio.parse_pin(body)
        if pin.metadata.name != name:
            raise ValidationError("metadata.name", f"must match the URL ({name!r})")
        return await self._write(name, pin, actor, request_id, create=False)

    async def patch(self, name: str, body: Any, actor: str, request_id: str) -> gpio.GpioPin:
        current = await self._store.gpio_pin(name)
        if current is None:
            raise NotFoundError("GPIOPin", name)
        if not isinstance(body, dict):
            raise ValidationError("body", "a merge patch must be a JSON object")
        document = msgspec.to_builtins(current)
        document.pop("status", None)
        merged = merge_patch(document, _without_status(body))
        pin = gpio.parse_pin(merged)
        if pin.metadata.name != name:
            raise ValidationError("metadata.name", "cannot be changed; create a new resource")
        return await self._write(name, pin, actor, request_id, create=False)

    async def _write(self, name: str, pin: gpio.GpioPin, actor: str, request_id: str, *,
                     create: bool) -> gpio.GpioPin:
        spec = pin.spec
        assert spec.pin is not None
        redis = self._store.redis
        if not await redis.sismember(self._keys.nodes, spec.node_name):
            raise ValidationError("spec.nodeName", f"unknown node {spec.node_name!r}")
        for attempt in range(WATCH_RETRIES):
            async with redis.pipeline(transaction=True) as pipe:
                claims_key = self._keys.gpio_claims(spec.node_name)
                await pipe.watch(self._keys.gpio(name))
                stored = await pipe.hget(self._keys.gpio(name), "resource")
                previous = gpio.decode_pin(stored) if stored else None
                if create and previous is not None:
                    raise ConflictError("metadata.name", f"GPIOPin {name!r} exists already")
                if not create and previous is None:
                    raise NotFoundError("GPIOPin", name)
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
                pipe.multi()
                if previous is not None:
                    self._release_claim(pipe, previous, keep=pin)
                pipe.hset(self._keys.gpio(name), mapping={
                    "resource": gpio.encode_pin(
                        msgspec.structs.replace(pin, status=gpio.GpioStatus())),
                    # Who asked for the declared state: the agent's reconciler reports it.
                    "actor": actor, "request_id": request_id})
                pipe.sadd(self._keys.gpio_index, name)
                pipe.hset(claims_key, str(spec.pin), name)
                self._command(pipe, spec.node_name, gpio.GpioCommand(
                    op="apply", resource=name, spec=spec, generation=pin.metadata.generation,
                    actor=actor, request_id=request_id))
                self._store.stage_event(pipe, events.gpio_resource_changed(
                    name, spec.node_name, "created" if create else "updated",
                    actor=actor, request_id=request_id))
                try:
                    await pipe.execute()
                except WatchError:
                    await _backoff(attempt)
                    continue
            stored_pin = await self._store.gpio_pin(name)
            assert stored_pin is not None
            return stored_pin
        raise ConflictError("metadata.name", f"GPIOPin {name!r} is being changed by "
                            "others at the same time; retry")

    def _release_claim(self, pipe: Pipeline, previous: gpio.GpioPin,
                       keep: gpio.GpioPin | None) -> None:
        old = previous.spec
        moved = keep is None or (old.node_name, old.pin) != (keep.spec.node_name, keep.spec.pin)
        if moved:
            pipe.hdel(self._keys.gpio_claims(old.node_name), str(old.pin))
        if keep is None or old.node_name != keep.spec.node_name:
            self._command(pipe, old.node_name, gpio.GpioCommand(
                op="release", resource=previous.metadata.name, spec=old,
                generation=previous.metadata.generation))

    def _command(self, pipe: Pipeline, node_id: str, cmd: gpio.GpioCommand) -> None:
        pipe.xadd(self._keys.commands(node_id), {COMMAND_FIELD: gpio.encode_command(cmd)},
                  maxlen=COMMAND_STREAM_MAXLEN, approximate=True)

    async def delete(self, name: str, actor: str, request_id: str) -> None:
        redis = self._store.redis
        for attempt in range(WATCH_RETRIES):
            async with redis.pipeline(transaction=True) as pipe:
                await pipe.watch(self._keys.gpio(name))
                stored = await pipe.hget(self._keys.gpio(name), "resource")
                if stored is None:
                    raise NotFoundError("GPIOPin", name)
                previous = gpio.decode_pin(stored)
                pipe.multi()
                self._release_claim(pipe, previous, keep=None)
                pipe.delete(self._keys.gpio(name))
                pipe.srem(self._keys.gpio_index, name)
                self._store.stage_event(pipe, events.gpio_resource_changed(
                    name, previous.spec.node_name, "deleted", actor=actor,
                    request_id=request_id))
                try:
                    await pipe.execute()
                    return
                except WatchError:
                    await _backoff(attempt)
                    continue
        raise ConflictError("metadata.name", f"GPIOPin {name!r} is being changed by "
                            "others at the same time; retry")


async def _backoff(attempt: int) -> None:
    # Jitter spreads writers that collided, so the next attempt does not collide again.
    await asyncio.sleep(random.uniform(0, 0.002) * (attempt + 1))


def _without_status(body: Any) -> Any:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "status"}
    return body
