"""The agent's own warnings and errors, reported to become ``system.log.created`` events."""

from __future__ import annotations

import logging

from agent.outbox import Outbox
from common import events, reports

_LEVELS: dict[int, events.Level] = {
    logging.WARNING: "warning", logging.ERROR: "error", logging.CRITICAL: "critical"}


class EventLogHandler(logging.Handler):
    def __init__(self, outbox: Outbox) -> None:
        super().__init__(logging.WARNING)
        self._outbox = outbox

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("redis", "asyncio")):
            return
        try:
            level = _LEVELS.get(record.levelno, "error")
            message = record.getMessage()
            self._outbox.emit(reports.LogLine(level=level, message=message,
                                              source=f"agent/{record.name}"))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
