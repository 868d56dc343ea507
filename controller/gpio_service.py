"""GPIO resources as the API offers them: create, replace, RFC 7386 merge patch, delete.

What a change means is decided here (the merge, the generation precondition); the store
(``controller.store.gpio``) applies it to the current resource read under WATCH, with the pin
claim, the node's declared state, the command to its agent and the event, in one transaction.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from common import gpio
from common.errors import ConflictError, NotFoundError, ValidationError
from controller.store import Store
from controller.store.gpio import Compute


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

    async def _write(self, name: str, compute: Compute, actor: str, request_id: str,
                     action: Literal["created", "updated"]) -> gpio.GpioPin:
        return await self._store.gpio.write(name, compute, actor, request_id, action)

    async def delete(self, name: str, actor: str, request_id: str) -> None:
        await self._store.gpio.delete(name, actor, request_id)


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
