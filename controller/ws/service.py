"""What every /ws connection shares: the hub, the ops, access control and the limits."""

from __future__ import annotations

from dataclasses import dataclass

from controller.ws.access import Access
from controller.ws.catchup import CatchUp
from controller.ws.hub import Hub
from controller.ws.ops import Ops


@dataclass(frozen=True, slots=True)
class Policy:
    """Limits on what one client may send."""

    max_message: int
    rate: float
    """Messages (data and control) per second, on average."""
    burst: float
    """Messages a client may send at once; a deficit of as many again closes it."""


@dataclass(frozen=True, slots=True)
class WebSockets:
    hub: Hub
    catch_up: CatchUp
    ops: Ops
    access: Access
    policy: Policy
