"""GPIO resources: desired state in Redis, a command to the node's agent, one transaction.

Every write computes the new resource from the current one read under WATCH, so concurrent
changes never overwrite each other. A pin is claimed per node (``gpio-claims:{node}``) under
WATCH, so two resources never hold the same pin even when two requests (or two replicas)
race. Each node's ``desired`` hash mirrors its resources (as apply commands) in the same
transaction: it is the one view of shared state its agent may read, to reconcile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec
from redis.asyncio.client import Pipeline

from common import events, gpio
from common.errors import ConflictError, NotFoundError, ValidationError
from common.keys import COMMAND_FIELD, COMMAND_STREAM_MAXLEN
from controller.store import Store, tx


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

        def compute(current: gpio.GpioPin | None) -> gpio.GpioPin:
            if current is not None:
                raise ConflictError("metadata.name",
                                    f"GPIOPin {pin.metadata.name!r} exists already")
            return pin

        return await self._write(pin.metadata.name, compute, actor, request_id, "created")

    async def replace(self, name: str, body: Any, actor: str, request_id: str) -> gpio.GpioPin:
        body = _without_status(body)
        if isinstance(body, dict):
            body.setdefault("metadata", {}).setdefault("name", name)
        pin = gpio.parse_pin(body)
        if pin.metadata.name != name:
            raise ValidationError("metadata.name", f"must match the URL ({name!r})")
        expected = _expected_generation(body)

        def compute(current: gpio.GpioPin | None) -> gpio.GpioPin:
            _check_precondition(name, current, expected)
            return pin

        return await self._write(name, compute, actor, request_id, "updated")

    async def patch(self, name: str, body: Any, actor: str, request_id: str) -> gpio.GpioPin:
        """RFC 7386 merge patch applied to the current resource read under WATCH, so two
        patches of different fields both survive; ``metadata.generation`` in the patch is a
        precondition (409 when the resource has moved on), as Kubernetes' resourceVersion."""
        if not isinstance(body, dict):
            raise ValidationError("body", "a merge patch must be a JSON object")
        patch = _without_status(body)
        expected = _expected_generation(patch)

        def compute(current: gpio.GpioPin | None) -> gpio.GpioPin:
            _check_precondition(name, current, expected)
            assert current is not None
            document = msgspec.to_builtins(current)
            document.pop("status", None)
            pin = gpio.parse_pin(merge_patch(document, patch))
            if pin.metadata.name != name:
                raise ValidationError("metadata.name",
                                      "cannot be changed; create a new resource")
            return pin

        return await self._write(name, compute, actor, request_id, "updated")

    async def _write(self, name: str, compute: Callable[[gpio.GpioPin | None], gpio.GpioPin],
                     actor: str, request_id: str,
                     action: Literal["created", "updated"]) -> gpio.GpioPin:
        keys, redis = self._keys, self._store.redis

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

        await tx.transact(redis, [keys.gpio(name)], body, what=f"GPIOPin {name!r}")
        stored_pin = await self._store.gpio_pin(name)
        assert stored_pin is not None
        return stored_pin

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

        await tx.transact(self._store.redis, [keys.gpio(name)], body,
                          what=f"GPIOPin {name!r}")

    async def rebuild_desired(self) -> int:
        """Fill in nodes' ``desired`` hashes from the resources where an entry is missing
        (every write above keeps them in step; this covers data from before they existed).
        """
        redis, keys = self._store.redis, self._keys
        names = await self._store.gpio_names()
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(keys.gpio(name), "resource", "actor", "request_id")
            rows = await pipe.execute()
        added = 0
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
            added = sum(bool(r) for r in await pipe.execute())
        return added


def _expected_generation(body: Any) -> int | None:
    metadata = body.get("metadata") if isinstance(body, dict) else None
    value = metadata.get("generation") if isinstance(metadata, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("metadata.generation", "a positive integer: the generation "
                              "this change was made against")
    return value


def _check_precondition(name: str, current: gpio.GpioPin | None,
                        expected: int | None) -> None:
    if current is None:
        raise NotFoundError("GPIOPin", name)
    if expected is not None and expected != current.metadata.generation:
        raise ConflictError("metadata.generation", f"GPIOPin {name!r} is at generation "
                            f"{current.metadata.generation}, not {expected}: re-read it and "
                            "apply the change again")


def _without_status(body: Any) -> Any:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "status"}
    return body
