"""Node statuses. Transitions are written by ``store.nodes.transition``: compare-and-set on
the node record with its ``node.status.changed`` in one transaction, so when several writers
race (liveness on two overlapping replicas, the provisioner, an operator) a transition happens,
and is announced, exactly once."""

from __future__ import annotations

import logging
from typing import Final

logger = logging.getLogger(__name__)

DISCOVERED: Final = "discovered"
PROVISIONING: Final = "provisioning"
READY: Final = "ready"
NOT_READY: Final = "not_ready"
OFFLINE: Final = "offline"
MAINTENANCE: Final = "maintenance"
FAILED: Final = "failed"

STATUSES: Final = (DISCOVERED, PROVISIONING, READY, NOT_READY, OFFLINE, MAINTENANCE, FAILED)
