"""Install the controller's public key on a Pi once, with a password that is not kept.

The password is used for this one connection and dropped; it is never logged, stored or
echoed. The host key is pinned (or checked against its pin) as for every connection.
"""

from __future__ import annotations

import shlex
from typing import Any

from aiohttp import web

from common.errors import NotFoundError, ValidationError
from controller import appkeys
from controller.provision import app as wiring
from controller.provision.ssh import StepFailed, Target, connect


async def install(app: web.Application, node_id: str, password: str, user: Any
                  ) -> dict[str, str]:
    settings, store = app[appkeys.SETTINGS], app[appkeys.STORE]
    ip, stored_user, port = await store.nodes.fields(node_id, "ip_address", "ssh_user",
                                                     "ssh_port")
    if not await store.nodes.exists(node_id):
        raise NotFoundError("node", node_id)
    if not ip:
        raise ValidationError("node_id", f"node {node_id!r} has no IP address")
    if user is not None and not isinstance(user, str):
        raise ValidationError("ssh_user", "must be a string")
    login = user or stored_user or settings.ssh_user
    target = Target(node_id=node_id, host=ip,
                    port=int(port) if port else settings.ssh_port, user=login)
    public = app[wiring.SSH_KEY].public_line()
    try:
        conn = await connect(target, app[wiring.SSH_KEY], app[wiring.HOST_KEYS],
                             timeout=settings.ssh_connect_timeout, password=password)
    except StepFailed as err:
        raise ValidationError("password", err.message) from None
    q = shlex.quote(public)
    try:
        done = await conn.run(
            "umask 077 && mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && "
            f"(grep -qxF {q} ~/.ssh/authorized_keys || echo {q} >> ~/.ssh/authorized_keys)",
            check=False)
    finally:
        conn.close()
    if done.exit_status != 0:
        raise ValidationError("node_id", f"could not write ~/.ssh/authorized_keys on "
                              f"{target.host} (exit {done.exit_status})")
    if user:
        await store.nodes.update(node_id, {"ssh_user": login})
    return {"node_id": node_id, "user": login, "host": target.host,
            "installed": app[wiring.SSH_KEY].fingerprint()}
