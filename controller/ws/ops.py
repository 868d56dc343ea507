"""What clients may ask over /ws (``subscribe``, ``ping``) and the ws.error each refusal gets.

Ops of one client run one at a time, in order; a refused op leaves the connection open.
"""

from __future__ import annotations

from typing import Final

import msgspec

from common.errors import ValidationError
from controller.subscription import Subscription, parse_since
from controller.ws import messages
from controller.ws.catchup import CatchUp
from controller.ws.client import Client
from controller.ws.codes import ErrorCode


class Op(msgspec.Struct, kw_only=True):
    op: str
    ref: int | str | None = None
    types: str | list[str] | None = None
    node: str | list[str] | None = None
    cluster: str | list[str] | None = None
    resource: str | list[str] | None = None
    since: str | None = None
    snapshot: bool = False


_decode: Final = msgspec.json.Decoder(Op).decode


class Ops:
    def __init__(self, catch_up: CatchUp) -> None:
        self._catch_up = catch_up

    async def run(self, client: Client, data: bytes) -> None:
        try:
            op = _decode(data)
        except msgspec.DecodeError as err:
            client.send(messages.error(None, ErrorCode.BAD_MESSAGE,
                                       f"not a valid op message: {err}"))
            return
        if op.op == "ping":
            client.send(messages.pong(op.ref))
        elif op.op == "subscribe":
            await self.subscribe(client, op)
        else:
            client.send(messages.error(op.ref, ErrorCode.UNKNOWN_OP,
                                       f"unknown op {op.op[:64]!r}: use subscribe or ping"))

    async def subscribe(self, client: Client, op: Op) -> None:
        try:
            subscription = Subscription.parse(types=op.types, node=op.node,
                                              cluster=op.cluster, resource=op.resource)
            since = parse_since(op.since)
        except ValidationError as err:
            code = (ErrorCode.BAD_SINCE if err.field == "since"
                    else ErrorCode.INVALID_SUBSCRIPTION)
            client.send(messages.error(op.ref, code, f"{err.field}: {err.reason}"))
            return
        if op.snapshot and client.snapshot_queued():
            client.send(messages.error(op.ref, ErrorCode.BUSY, "the previous snapshot is still "
                                       "queued to you: read it before asking for another"))
            return
        client.resubscribe(subscription)
        client.send(messages.ack(op.ref, subscription))
        await self._catch_up.run(client, since, op.snapshot)
