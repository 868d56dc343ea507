"""The Node.js reference server and load client: found, and their packages installed once.

The scripts stay where they are shipped (``../shared/bench-reference`` by default); their
``node_modules`` live in a cache directory outside the repository and reach them through
``NODE_PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "bench-reference"
DEFAULT_CACHE = Path.home() / ".cache" / "pic-bench-ref"


@dataclass(frozen=True)
class Reference:
    directory: Path
    modules: Path

    @property
    def server(self) -> Path:
        return self.directory / "node-ws-server.js"

    @property
    def client(self) -> Path:
        return self.directory / "ws-load-client.js"

    @property
    def env(self) -> dict[str, str]:
        return {"NODE_PATH": str(self.modules)}

    @property
    def node(self) -> str:
        return shutil.which("node") or "node"


def prepare(directory: Path, cache: Path) -> Reference:
    """Check the scripts exist and run ``npm install --prefix cache`` if packages are missing."""
    for name in ("node-ws-server.js", "ws-load-client.js", "package.json"):
        if not (directory / name).is_file():
            raise SystemExit(f"{directory / name} not found (set --reference-dir)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("node and npm are needed for the reference server and load client")
    wanted = json.loads((directory / "package.json").read_text())["dependencies"]
    modules = cache / "node_modules"
    if not all((modules / name / "package.json").is_file() for name in wanted):
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(directory / "package.json", cache / "package.json")
        print(f"installing {', '.join(wanted)} into {cache} (once)", flush=True)
        subprocess.run(["npm", "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                        "--omit=dev"], check=True, env={**os.environ})
    return Reference(directory, modules)
