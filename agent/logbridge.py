"""The agent's own warnings and errors, sent out as ``system.log.created`` events."""

from __future__ import annotations

import logging

from agent.outbox import Outbox
from common import events

_LEVELS: dict[int, events.Level] = {
    logging.WARNING: "warning", logging.ERROR: "error", logging.CRITICAL: "critical"}


class EventLogHandler(logging.Handler):
    def __init__(self, outbox: Outbox, node_id: str) -> None:
        super().__init__(logging.WARNING)
        self._outbox = outbox
        self._node_id = node_id

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("redis", "asyncio")):
            return
        try:
            level = _LEVELS.get(record.levelno, "error")
            message = record.getMessage()
            self._outbox.emit(events.system_log_created(
                level, message, source=f"agent/{record.name}", node_id=self._node_id))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
