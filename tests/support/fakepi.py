"""Fake Raspberry Pis: a real OpenSSH sshd per network namespace, dressed up as a Pi.

Each Pi gets its own network namespace on a test bridge, its own UTS and mount namespace
(hostname, /proc/cpuinfo, /proc/cmdline, /etc/os-release, the device-tree model, a user
``pi`` with passwordless sudo, and private /boot, /usr/local, /var/lib/rancher, /etc/rancher,
/opt...), so what the provisioner does to one node stays on that node and can be read back
by the test from ``FakePi.fs``. ``reboot`` on a node restarts its sshd after dropping every
session and re-reads the kernel command line from cmdline.txt, as a Pi would.

A stand-in K3s (``k3s_script`` / ``k3s_binary``) records what it was asked to do and creates
the files K3s would: node-token, uninstall scripts, a ``k3s kubectl`` that knows the nodes
that joined (through a registry directory all nodes share).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import asyncssh

PI_MODEL = "Raspberry Pi 4 Model B Rev 1.4"
PI_OS = ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
         'VERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n')
CPUINFO = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
           "CPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\n"
           f"Revision\t: c03114\nModel\t\t: {PI_MODEL}\n")
BOOT_CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 "
                "fsck.repair=yes rootwait")
CGROUPS = " cgroup_memory=1 cgroup_enable=memory"
KNOWN_VERSIONS = ("v1.31.4+k3s1", "v1.30.8+k3s1")
PI_UID = 4242
BIND_DIRS = ("boot", "var/lib/rancher", "etc/rancher", "usr/local", "etc/systemd/system",
             "etc/pi-agent", "opt", "home", "etc/sudoers.d")
SSHD = "/usr/sbin/sshd"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def namespaces_usable() -> str | None:
    """None when fake Pis can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, mounts)"
    if not Path(SSHD).exists():
        return f"{SSHD} is not installed (openssh-server)"
    name = f"pcprobe{secrets.token_hex(3)}"
    try:
        sh("ip", "netns", "add", name)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        return f"network namespaces are not permitted here: {err}"
    sh("ip", "netns", "del", name, check=False)
    return None


def k3s_script(registry: Path, k3s_binary: Path, install_seconds: float = 0.0) -> str:
    versions = "|".join(KNOWN_VERSIONS)
    return f"""#!/bin/sh
# Stand-in for the K3s installer: records its arguments and environment and creates the
# files K3s would. It joins only with the token of the cluster's first server.
set -e
REG={registry}
LOG=/var/lib/rancher/install.log
mkdir -p /var/lib/rancher/k3s/server /usr/local/bin /etc/rancher/k3s /etc/systemd/system
{{ echo "args=$*"; env | grep -E '^(K3S|INSTALL_K3S)_' | sort; echo "uid=$(id -u)"
   echo "--"; }} >> $LOG
case "${{INSTALL_K3S_VERSION:-}}" in
  ""|{versions}) ;;
  *) echo "[ERROR]  Download failed: no K3s release ${{INSTALL_K3S_VERSION}}" >&2; exit 1 ;;
esac
started=$(date +%s.%N)
sleep {install_seconds}
role=$1; shift
name=$(hostname)
for a in "$@"; do case "$a" in --node-name=*) name=${{a#--node-name=}} ;; esac; done
if [ -n "${{K3S_URL:-}}" ]; then
  token=$(cat "$K3S_TOKEN_FILE")
  [ "$token" = "$(cat $REG/token 2>/dev/null)" ] || {{
    echo "[ERROR] token mismatch joining $K3S_URL" >&2; exit 1; }}
fi
if [ "$role" = server ]; then
  if [ -z "${{K3S_URL:-}}" ]; then
    ca=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \\n')
    secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')
    [ -s /var/lib/rancher/k3s/server/node-token ] || \\
      echo "K10$ca::server:$secret" > /var/lib/rancher/k3s/server/node-token
    cp /var/lib/rancher/k3s/server/node-token $REG/token
  else
    cp "$K3S_TOKEN_FILE" /var/lib/rancher/k3s/server/node-token
  fi
  unit=k3s; uninstall=/usr/local/bin/k3s-uninstall.sh
else
  unit=k3s-agent; uninstall=/usr/local/bin/k3s-agent-uninstall.sh
fi
[ "${{INSTALL_K3S_SKIP_DOWNLOAD:-}}" = true ] || cp {k3s_binary} /usr/local/bin/k3s
chmod 755 /usr/local/bin/k3s
env | grep -E '^K3S_' > /etc/systemd/system/$unit.service.env || true
cat > $uninstall <<UNINSTALL
#!/bin/sh
echo "uninstall $unit" >> $LOG
rm -f $REG/nodes/$name /usr/local/bin/k3s /etc/systemd/system/$unit.service.env $uninstall
rm -rf /var/lib/rancher/k3s /etc/rancher/k3s
UNINSTALL
chmod 755 $uninstall
mkdir -p $REG/nodes
touch $REG/nodes/$name
echo "$started $(date +%s.%N)" >> /var/lib/rancher/install-times
echo "[INFO]  systemd: Starting $unit"
"""


def k3s_binary(registry: Path) -> str:
    return f"""#!/bin/sh
# Stand-in for the k3s binary: only 'k3s kubectl' for nodes, answered from the registry.
REG={registry}
[ "$1" = kubectl ] || {{ echo "k3s stand-in: only kubectl" >&2; exit 1; }}
shift
echo "kubectl $*" >> /var/lib/rancher/kubectl.log
case "$1 $2" in
  "get node") [ -e "$REG/nodes/$3" ] || {{
                echo "Error from server (NotFound): nodes \\"$3\\" not found" >&2; exit 1; }}
              printf True ;;
  "delete node") rm -f "$REG/nodes/$3"; echo "node \\"$3\\" deleted" ;;
  drain*) [ -e "$REG/nodes/$2" ] && echo "node/$2 drained" ;;
esac
"""


class FakePi:
    def __init__(self, fleet: Fleet, index: int, hostname: str, *, model: str, os_release: str,
                 cgroups: bool, authorized_key: str, password: str = "") -> None:
        self.fleet = fleet
        self.ns = f"{fleet.run}-{index}"
        self.veth = f"pcv{fleet.run[2:]}{index}"
        self.ip = f"{fleet.subnet}.{10 + index}"
        self.hostname = hostname
        self.dir = fleet.root / f"pi{index}"
        self.fs = self.dir / "fs"
        self.proc: subprocess.Popen[bytes] | None = None
        self.password = password
        self._prepare(model, os_release, cgroups, authorized_key)

    # --- files ---------------------------------------------------------------------------

    def _prepare(self, model: str, os_release: str, cgroups: bool, authorized_key: str) -> None:
        d = self.dir
        for rel in BIND_DIRS:
            (self.fs / rel).mkdir(parents=True, exist_ok=True)
        (self.fs / "boot/firmware").mkdir()
        (self.fs / "boot/firmware/cmdline.txt").write_text(
            BOOT_CMDLINE + (CGROUPS if cgroups else "") + "\n")
        (d / "cmdline").write_text(self._kernel_cmdline() + "\n")
        (d / "cpuinfo").write_text(CPUINFO.replace(PI_MODEL, model))
        (d / "os-release").write_text(os_release)
        (d / "model").write_bytes(model.encode() + b"\0")
        (d / "boots").write_text("1\n")
        etc = d / "etc"
        etc.mkdir()
        passwd = Path("/etc/passwd").read_text()
        (etc / "passwd").write_text(passwd + f"pi:x:{PI_UID}:{PI_UID}:,,,:/home/pi:/bin/sh\n")
        (etc / "group").write_text(Path("/etc/group").read_text() + f"pi:x:{PI_UID}:\n")
        shadow = Path("/etc/shadow").read_text() if Path("/etc/shadow").exists() else ""
        hashed = sh("openssl", "passwd", "-6", self.password).stdout.strip() \
            if self.password else "*"
        (etc / "shadow").write_text(shadow + f"pi:{hashed}:19000:0:99999:7:::\n")
        (etc / "shadow").chmod(0o640)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.hostname}\n")
        home = self.fs / "home/pi"
        home.mkdir()
        os.chown(home, PI_UID, PI_UID)
        sudoers = self.fs / "etc/sudoers.d/010_pi-nopasswd"
        sudoers.write_text("pi ALL=(ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        sbin = self.fs / "usr/local/sbin"
        sbin.mkdir()
        self._script(sbin / "reboot", f"touch {d}/reboot-requested\nkill $(cat {d}/sshd.pid)\n")
        self._script(sbin / "systemctl", f"echo \"$*\" >> {d}/systemctl.log\n"
                     "[ \"$1\" = is-active ] && echo active\nexit 0\n")
        (self.fs / "usr/local/bin").mkdir()
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(
            authorized_key.strip() + "\n" if authorized_key else "")
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, PI_UID, PI_UID)
        self.new_host_key()
        (d / "sshd_config").write_text(
            f"Port 22\nListenAddress {self.ip}\nHostKey {d}/ssh_host_ed25519_key\n"
            f"PidFile none\nAuthorizedKeysFile .ssh/authorized_keys\n"
            f"PasswordAuthentication {'yes' if self.password else 'no'}\n"
            "KbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nSubsystem sftp internal-sftp\n")
        binds = "\n".join(f"mount --bind {self.fs / rel} /{rel}" for rel in BIND_DIRS)
        self._script(d / "boot.sh", f"""set -e
hostname {self.hostname}
mount --bind {d}/cpuinfo /proc/cpuinfo
mount --bind {d}/cmdline /proc/cmdline
mount --bind {d}/os-release /etc/os-release
mount -t tmpfs none /sys/firmware
mkdir -p /sys/firmware/devicetree/base
cp {d}/model /sys/firmware/devicetree/base/model
mount -t tmpfs none /var/tmp
mkdir -p /var/lib/rancher /etc/rancher /etc/pi-agent
{binds}
for f in passwd group shadow hosts; do mount --bind {d}/etc/$f /etc/$f; done
mkdir -p /run/sshd
set +e
while true; do
  {SSHD} -D -e -f {d}/sshd_config &
  echo $! > {d}/sshd.pid
  wait $!
  if [ -e {d}/reboot-requested ]; then
    rm -f {d}/reboot-requested
    for p in $(ip netns pids {self.ns}); do [ "$p" = $$ ] || kill -9 "$p" 2>/dev/null; done
    echo "cgroup_disable=memory $(cat /boot/firmware/cmdline.txt)" > {d}/cmdline
    echo boot >> {d}/boots
  elif [ -e {d}/restart-requested ]; then
    rm -f {d}/restart-requested
  else
    exit 0
  fi
done
""")

    def _kernel_cmdline(self) -> str:
        # Raspberry Pi kernels disable the memory cgroup unless cmdline.txt enables it.
        return "cgroup_disable=memory " + (self.fs / "boot/firmware/cmdline.txt").read_text(
        ).strip()

    @staticmethod
    def _script(path: Path, body: str) -> None:
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def new_host_key(self) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        key.write_private_key(self.dir / "ssh_host_ed25519_key")
        (self.dir / "ssh_host_ed25519_key").chmod(0o600)

    # --- processes -----------------------------------------------------------------------

    def start(self) -> None:
        f = self.fleet
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
           "netns", self.ns)
        sh("ip", "link", "set", self.veth, "master", f.bridge, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.ip}/24", "dev", "eth0")
        sh("ip", "-n", self.ns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        log = (self.dir / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--uts", "--mount",
             "--propagation", "private", "sh", str(self.dir / "boot.sh")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_listening("", 0)

    def sshd_pid(self) -> str:
        pid_file = self.dir / "sshd.pid"
        return pid_file.read_text().strip() if pid_file.exists() else ""

    def _listening(self) -> int:
        log = self.dir / "sshd.log"
        return log.read_text(errors="replace").count("Server listening on") if log.exists() \
            else 0

    def wait_listening(self, old_pid: str, before: int, timeout: float = 10.0) -> None:
        """Until a new sshd says 'Server listening' and its PID is alive and new (a stale
        one once fooled a plain banner check)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"fake Pi {self.ns} exited:\n{self.log()}")
            pid = self.sshd_pid()
            if pid and pid != old_pid and Path(f"/proc/{pid}").exists() and \
                    self._listening() > before:
                return
            time.sleep(0.02)
        raise AssertionError(f"sshd of {self.ns} did not start:\n{self.log()}")

    def restart_sshd(self) -> None:
        """Restart sshd (e.g. after a host key change) without a 'reboot'."""
        old, before = self.sshd_pid(), self._listening()
        (self.dir / "restart-requested").touch()
        os.kill(int(old), 15)
        self.wait_listening(old, before)

    @property
    def boots(self) -> int:
        return len((self.dir / "boots").read_text().split())

    def log(self) -> str:
        path = self.dir / "sshd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def read(self, rel: str) -> str:
        path = self.fs / rel
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        pids = sh("ip", "netns", "pids", self.ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        sh("ip", "link", "del", self.veth, check=False)
        sh("ip", "netns", "del", self.ns, check=False)


class Fleet:
    """A bridge with fake Pis on it; the controller side talks to them from the root
    namespace through the bridge address."""

    def __init__(self, root: Path, install_seconds: float = 0.0) -> None:
        self.install_seconds = install_seconds
        self.run = f"pc{secrets.token_hex(3)}"
        self.bridge = f"pcb{self.run[2:]}"
        octet = 100 + secrets.randbelow(150)
        self.subnet = f"10.{octet}.{secrets.randbelow(250)}"
        self.gateway = f"{self.subnet}.1"
        self.root = root
        self.registry = root / "registry"
        self.pis: list[FakePi] = []
        self.bundle = root / "bundle"

    def start(self) -> Fleet:
        self.registry.mkdir(parents=True)
        (self.registry / "nodes").mkdir()
        self.bundle.mkdir()
        binary = self.bundle / "k3s"
        binary.write_text(k3s_binary(self.registry))
        binary.chmod(0o755)
        (self.bundle / "install.sh").write_text(
            k3s_script(self.registry, binary, self.install_seconds))
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        return self

    def add(self, hostname: str, authorized_key: str, *, model: str = PI_MODEL,
            os_release: str = PI_OS, cgroups: bool = True, password: str = "",
            start: bool = True) -> FakePi:
        pi = FakePi(self, len(self.pis) + 1, hostname, model=model, os_release=os_release,
                    cgroups=cgroups, authorized_key=authorized_key, password=password)
        self.pis.append(pi)
        if start:
            pi.start()
        return pi

    def unused_ip(self) -> str:
        return f"{self.subnet}.250"

    def stop(self) -> None:
        for pi in self.pis:
            pi.stop()
        sh("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
