"""K3s on the Pi: install/join commands, the token, the server's view of a node, removal.

The join token travels only through stdin into a root-only file, and the installer reads
it from there (``K3S_TOKEN_FILE``): it is never on a command line, in output or in Redis.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from controller.provision.ssh import Session, StepFailed

TOKEN_PATH: Final = "/var/lib/rancher/k3s/server/node-token"
JOIN_TOKEN_FILE: Final = "/etc/rancher/k3s/join-token"
API_PORT: Final = 6443
VERSION_RE: Final = re.compile(r"^v\d+\.\d+\.\d+(-rc\d+)?\+k3s\d+$")
CHANNEL_RE: Final = re.compile(r"^(stable|latest|testing|v\d+\.\d+)$")
COMPONENTS: Final = ("traefik", "servicelb", "local-storage", "metrics-server", "coredns")
BUNDLE_STAGE: Final = ".pi-controller/k3s"
"""Where a bundle is uploaded, under the SSH user's home (SFTP writes as that user)."""
BINARY_FOR_ARCH: Final = {"aarch64": "k3s-arm64", "arm64": "k3s-arm64", "armv7l": "k3s-armhf",
                          "x86_64": "k3s"}


def server_url(ip_address: str) -> str:
    return f"https://{ip_address}:{API_PORT}"


@dataclass(frozen=True)
class InstallPlan:
    role: str
    init: bool
    """The cluster's first server: starts embedded etcd (--cluster-init)."""
    url: str
    """The server to join; empty for the first server."""
    version: str
    channel: str
    disable: tuple[str, ...]
    tls_sans: tuple[str, ...]
    node_name: str


def install_env(plan: InstallPlan, *, skip_download: bool) -> dict[str, str]:
    env: dict[str, str] = {}
    if plan.version:
        env["INSTALL_K3S_VERSION"] = plan.version
    elif plan.channel:
        env["INSTALL_K3S_CHANNEL"] = plan.channel
    if plan.url:
        env["K3S_URL"] = plan.url
        env["K3S_TOKEN_FILE"] = JOIN_TOKEN_FILE
    if skip_download:
        env["INSTALL_K3S_SKIP_DOWNLOAD"] = "true"
    return env


def install_args(plan: InstallPlan) -> list[str]:
    args = [plan.role]
    if plan.role == "server":
        if plan.init:
            args.append("--cluster-init")
        args += [f"--tls-san={san}" for san in plan.tls_sans]
        args += [f"--disable={name}" for name in plan.disable]
        # Kubeconfig readable by root only: the controller reads it through sudo.
        args.append("--write-kubeconfig-mode=0600")
    args.append(f"--node-name={plan.node_name}")
    return args


def _env_words(env: dict[str, str]) -> str:
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))


async def write_join_token(session: Session, token: str) -> None:
    await session.run(f"umask 077 && mkdir -p {Path(JOIN_TOKEN_FILE).parent} && "
                      f"cat > {JOIN_TOKEN_FILE}", sudo=True, stdin=token.strip() + "\n")


async def install_online(session: Session, plan: InstallPlan, script_url: str) -> None:
    env = install_env(plan, skip_download=False)
    script = (
        "set -e; tmp=$(mktemp); trap 'rm -f \"$tmp\"' EXIT; "
        f"curl -sfSL --retry 2 -o \"$tmp\" {shlex.quote(script_url)} || "
        f"{{ echo 'cannot download the K3s install script from {script_url}' >&2; exit 1; }}; "
        f"sudo -n env {_env_words(env)} sh \"$tmp\" {shlex.join(install_args(plan))}")
    await session.run(script, timeout=900)


async def upload_bundle(session: Session, bundle_dir: Path, arch: str) -> str:
    """Upload install.sh, the binary and any images (skipping files already there)."""
    binary = BINARY_FOR_ARCH.get(arch, "k3s")
    names = ["install.sh", binary]
    names += sorted(p.name for p in bundle_dir.glob("k3s-airgap-images-*"))
    await session.run(f"mkdir -p {BUNDLE_STAGE}", quiet=True)
    home = (await session.run("pwd", quiet=True)).stdout.strip()
    stage = f"{home}/{BUNDLE_STAGE}"
    for name in names:
        local = bundle_dir / name
        if not local.is_file():
            raise StepFailed(f"the K3s bundle {bundle_dir} has no {name} (for {arch})")
        digest = _sha256(local)
        remote = f"{stage}/{name}"
        have = await session.run(f"sha256sum {shlex.quote(remote)} 2>/dev/null | cut -c1-64",
                                 check=False, quiet=True)
        if have.stdout.strip() != digest:
            await session.upload(local, remote)
    images = " ".join(shlex.quote(f"{stage}/{n}") for n in names[2:])
    place = (f"install -m 755 {shlex.quote(f'{stage}/{binary}')} /usr/local/bin/k3s && "
             "mkdir -p /var/lib/rancher/k3s/agent/images")
    if images:
        place += f" && cp {images} /var/lib/rancher/k3s/agent/images/"
    await session.run(place, sudo=True)
    return f"{stage}/install.sh"


async def install_bundle(session: Session, plan: InstallPlan, script: str) -> None:
    env = install_env(plan, skip_download=True)
    await session.run(f"env {_env_words(env)} sh {shlex.quote(script)} "
                      f"{shlex.join(install_args(plan))}", sudo=True, timeout=900)


async def read_token(server: Session) -> str:
    result = await server.run(f"cat {TOKEN_PATH}", sudo=True, quiet=True, check=False)
    token = result.stdout.strip()
    if result.exit_status != 0 or not token:
        raise StepFailed(f"cannot read the join token from the server {server.target.host} "
                         f"({TOKEN_PATH}): is K3s installed there?",
                         server.redact(result.stderr.strip()))
    server.redact.add(token)
    server.log(f"read the join token from {TOKEN_PATH} (not shown)\n")
    return token


async def node_ready(server: Session, node_name: str) -> bool:
    jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
    result = await server.run(f"k3s kubectl get node {shlex.quote(node_name)} -o "
                              f"jsonpath={shlex.quote(jsonpath)}", sudo=True, check=False,
                              quiet=True)
    return result.exit_status == 0 and result.stdout.strip() == "True"


async def drain(server: Session, node_name: str) -> None:
    await server.run(f"k3s kubectl drain {shlex.quote(node_name)} --ignore-daemonsets "
                     "--delete-emptydir-data --force --timeout=300s", sudo=True, timeout=360)


async def delete_node(server: Session, node_name: str) -> None:
    await server.run(f"k3s kubectl delete node {shlex.quote(node_name)} --ignore-not-found",
                     sudo=True)


async def uninstall(session: Session, role: str) -> None:
    script = "/usr/local/bin/k3s-uninstall.sh" if role == "server" else \
        "/usr/local/bin/k3s-agent-uninstall.sh"
    # Absent script: K3s is not (or no longer) installed there, which is the goal.
    await session.run(f"if [ -x {script} ]; then {script}; else echo 'K3s is not installed'; "
                      f"fi; rm -f {JOIN_TOKEN_FILE}", sudo=True, timeout=600)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
