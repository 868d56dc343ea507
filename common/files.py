"""Files that hold secrets: written so that only their owner can ever read them."""

from __future__ import annotations

import os
from pathlib import Path


def write_secret(path: Path, content: str | bytes) -> None:
    """Create or replace ``path`` atomically with mode 0600 (its folder 0700 if created).

    The content goes to a temporary file created 0600, then is renamed into place: the
    secret is never readable by others, and a crash never leaves half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = content.encode() if isinstance(content, str) else content
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)
