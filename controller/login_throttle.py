"""Failed logins slow down, per client address.

Every wrong token (at ``/api/v1/login`` or as a bearer token on any route) counts against
the address it came from. The first FREE_FAILURES in a WINDOW cost nothing; each one after
that locks the address out for twice as long as the one before (1 s, 2 s, 4 s ... at most
MAX_LOCK), answered 429 with ``Retry-After`` without even looking at the token. A success
forgets the address. Guessing a 32-character token at a few tries a minute is hopeless.

Counts live in this replica's memory: an attacker spreading guesses over several replicas
gets as many allowances, which does not change the arithmetic.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from common.errors import ThrottledError

logger = logging.getLogger(__name__)

FREE_FAILURES: Final = 5
WINDOW: Final = 60.0
MAX_LOCK: Final = 900.0
MAX_ADDRESSES: Final = 10_000


@dataclass(slots=True)
class _Record:
    failures: int
    first: float
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(self) -> None:
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def check(self, address: str) -> None:
        """ThrottledError if ``address`` is locked out now."""
        record = self._records.get(address)
        if record is None:
            return
        wait = record.locked_until - time.monotonic()
        if wait > 0:
            raise ThrottledError(f"too many failed logins from {address}; retry in "
                                 f"{math.ceil(wait)} s", math.ceil(wait))

    def failed(self, address: str) -> bool:
        """Count a failure; True when this one starts a lock-out (worth one warning)."""
        now = time.monotonic()
        record = self._records.get(address)
        if record is None or (now - record.first > WINDOW and record.locked_until < now):
            record = _Record(failures=0, first=now)
        record.failures += 1
        self._records[address] = record
        self._records.move_to_end(address)
        while len(self._records) > MAX_ADDRESSES:
            self._records.popitem(last=False)
        over = record.failures - FREE_FAILURES
        logger.warning("failed login from %s (%d in a row)", address, record.failures)
        if over <= 0:
            return False
        record.locked_until = now + min(MAX_LOCK, 2.0 ** (over - 1))
        return over == 1

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)
