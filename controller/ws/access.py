"""Open sockets live only as long as the access they were opened with, and one token opens
only so many of them.

Every socket is tied to the credential it authenticated with (a token or a login session).
Every CHECK_SECONDS the credentials of this replica's open sockets are asked of Redis; a
revoked or deleted token, or a session that logged out or expired, closes its sockets with
4401. Asking Redis (not a local signal) makes a revocation on any replica bite on all.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Final

from common.redis_client import UNAVAILABLE
from controller.auth import Credential, TokenStore
from controller.ws.client import Client
from controller.ws.codes import CloseCode

logger = logging.getLogger(__name__)

CHECK_SECONDS: Final = 0.5
ENDED_REASON: Final = "access ended: the token was revoked or the session ended"


class Access:
    def __init__(self, tokens: TokenStore, max_per_token: int) -> None:
        self._tokens = tokens
        self.max_per_token = max_per_token
        self._by_credential: dict[Credential, set[Client]] = {}
        self._per_name: dict[str, int] = {}
        self._wake = asyncio.Event()

    def admit(self, client: Client, credential: Credential) -> Credential | None:
        """Tie ``client`` to ``credential``; None if its token has all the sockets it may
        have (the name counts a token and the sessions opened with it together)."""
        count = self._per_name.get(client.name, 0)
        if count >= self.max_per_token:
            return None
        self._per_name[client.name] = count + 1
        credential = sys.intern(credential)  # one copy per credential, not per socket
        self._by_credential.setdefault(credential, set()).add(client)
        return credential

    def release(self, client: Client, credential: Credential) -> None:
        clients = self._by_credential.get(credential)
        if clients is None or client not in clients:
            return
        clients.discard(client)
        if not clients:
            del self._by_credential[credential]
        left = self._per_name.get(client.name, 1) - 1
        if left > 0:
            self._per_name[client.name] = left
        else:
            self._per_name.pop(client.name, None)

    def recheck(self) -> None:
        """Check at once (a token was revoked or a session closed on this replica)."""
        self._wake.set()

    async def watch(self) -> None:
        while True:
            try:
                async with asyncio.timeout(CHECK_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._by_credential:
                continue
            credentials = list(self._by_credential)
            try:
                valid = await self._tokens.still_valid(credentials)
            except UNAVAILABLE:
                continue  # nothing is known to be revoked; the feed reports the outage
            for credential in credentials:
                if credential not in valid:
                    for client in list(self._by_credential.get(credential, ())):
                        client.kick(CloseCode.ACCESS_ENDED, ENDED_REASON)
