"""The controller's SSH identity and the Pis' host keys, pinned on first use.

The key pair lives under the state directory (``id_ed25519``, mode 0600), generated on first
use; only its public half ever leaves this module. Host keys are pinned in the store
(``store.host_keys``), so every controller replica trusts the same keys; a key that differs
from its pin refuses the connection (``asyncssh.HostKeyNotVerifiable``) until an admin
removes the pin.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import asyncssh

from common.files import write_secret
from controller.store.host_keys import HostKeys, PinnedKey

logger = logging.getLogger(__name__)

KEY_FILE = "id_ed25519"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pi-controller"


class ControllerKey:
    """The controller's ed25519 key pair, created on first use."""

    def __init__(self, state_dir: str) -> None:
        self.dir = Path(state_dir) if state_dir else default_state_dir()
        self._key: asyncssh.SSHKey | None = None

    @property
    def path(self) -> Path:
        return self.dir / KEY_FILE

    def private(self) -> asyncssh.SSHKey:
        if self._key is None:
            self._key = self._load_or_create()
        return self._key

    def _load_or_create(self) -> asyncssh.SSHKey:
        if self.path.exists():
            return asyncssh.read_private_key(self.path)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="pi-controller")
        write_secret(self.path, key.export_private_key())
        self.path.with_suffix(".pub").write_bytes(key.export_public_key())
        logger.info("generated the controller's SSH key %s", self.path)
        return key

    def public_line(self) -> str:
        return self.private().export_public_key().decode().strip()

    def fingerprint(self) -> str:
        return str(self.private().get_fingerprint("sha256"))


def known_hosts(pin: PinnedKey) -> asyncssh.SSHKnownHosts:
    """The known-hosts entry that makes a connection accept the pinned key and no other."""
    host = pin.host if pin.port == 22 else f"[{pin.host}]:{pin.port}"
    return asyncssh.import_known_hosts(f"{host} {pin.key}\n")


async def pin_host_key(pins: HostKeys, host: str, port: int, key: asyncssh.SSHKey,
                       node_id: str) -> PinnedKey:
    """Pin ``key`` unless a key is pinned already; returns the pin that holds."""
    held, new = await pins.pin(PinnedKey(
        host=host, port=port, key=key.export_public_key().decode().strip(),
        fingerprint=str(key.get_fingerprint("sha256")), pinned_at=time.time(),
        node_id=node_id))
    if new:
        logger.info("pinned the SSH host key of %s:%d (%s) on first use", host, port,
                    held.fingerprint)
    return held
