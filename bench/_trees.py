"""Run the code under test from another revision of this repository, in the same run.

``materialize(rev)`` extracts that revision (``git archive``) into a folder; processes
started with ``env(tree)`` import ``common``, ``agent`` and ``controller`` from it. Bench
helpers that import product code honour ``PIC_BENCH_TREE`` the same way, so one benchmark
script measures the previous design and this one side by side.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BEFORE_CONFINEMENT = "8c3fe34"
"""The last revision in which agents wrote shared state with the controller's credentials."""
BEFORE_WS_BOUNDS = "8ee8c48"
"""The last revision before /ws bounded what it queues per client (and split controller/ws)."""
BEFORE_HISTORY_PAGES = "ce72824"
"""The last revision in which /api/v1/events read the stream ``limit`` entries at a time."""


def materialize(rev: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def env(tree: Path | None) -> dict[str, str]:
    if tree is None:
        return {}
    return {"PYTHONPATH": str(tree), "PIC_BENCH_TREE": str(tree)}


def use_tree() -> None:
    """For a bench helper: import the product from PIC_BENCH_TREE (else this checkout)."""
    sys.path.insert(0, os.environ.get("PIC_BENCH_TREE", str(ROOT)))
