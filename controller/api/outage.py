"""Whether the API finds Redis unreachable: said once when an outage starts and once when
it ends, instead of a traceback for every request answered 503 meanwhile."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


class Outage:
    def __init__(self) -> None:
        self.since: float | None = None

    def began(self, err: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("Redis unreachable (%s): API calls answer 503 until it is back",
                           type(err).__name__)

    def ended(self) -> None:
        if self.since is not None:
            logger.warning("Redis reachable again after %.1f s: API calls are served",
                           time.monotonic() - self.since)
            self.since = None
