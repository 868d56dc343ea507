"""Debian's Chromium as the browser tests drive it (no browser download)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = ["--no-sandbox", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        "--disable-dev-shm-usage", "--disable-gpu"]
