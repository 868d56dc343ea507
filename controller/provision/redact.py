"""Keeps secrets out of anything a job records, logs or announces."""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

_PATTERNS: Final = (
    # A K3s token: "K10<ca hash>::<user>:<password>", or a bare "<user>:<password>" after it.
    re.compile(r"K10[0-9a-f]{16,}::[^\s'\"]+"),
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
               re.S),
    re.compile(r"(?<=K3S_TOKEN=)[^\s'\"]+"),
    re.compile(r"(?<=--token )[^\s'\"]+"),
    # The password part of URLs such as redis://:secret@host.
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"),
)


class Redactor:
    """Masks known secret values and anything shaped like a token or a private key."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str) -> None:
        secret = secret.strip()
        if len(secret) >= 6:
            self._secrets.add(secret)
            # K3s accepts the short form (the part after "::") as the same token.
            if "::" in secret:
                short = secret.split("::", 1)[1]
                self._secrets.update({short, short.rsplit(":", 1)[-1]})

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(MASK, text)
        return text
