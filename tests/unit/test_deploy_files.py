"""The deployment files can't run here (no Docker engine, no cluster): check them by reading.

Every PIC_* variable they set must be a real setting, or it would be silently ignored.
No password is written in them: only references to the environment or to Secrets.
(tests/integration/test_redis_lockdown.py runs the Redis configuration for real.)
"""

from __future__ import annotations

import configparser
import dataclasses
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from agent.settings import AgentSettings
from common.settings import env_var
from controller.settings import ControllerSettings

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {env_var(f) for cls in (AgentSettings, ControllerSettings)
         for f in dataclasses.fields(cls)}
# The Redis container runs redis-cli (its healthcheck), which reads the password from this.
REDIS_CLI_VARIABLES = {"REDISCLI_AUTH"}
PASSWORD_REF = re.compile(r"\$\{PIC_REDIS_PASSWORD:\?[^}]+\}")
CONTROLLER_URL = "redis://pic-controller:${PIC_REDIS_PASSWORD:?set PIC_REDIS_PASSWORD}@redis:6379/0"
CONTROLLER_ACL = ["~pic:*", "&*", "+@all", "-@dangerous", "+acl|setuser", "+acl|deluser",
                  "+acl|getuser", "+acl|whoami", "+client|kill", "+info", "+role"]
MANIFESTS = sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def user_args(command: list[str]) -> list[str]:
    """The --user directive of a redis-server command line, up to the next directive."""
    start = command.index("--user")
    end = next((i for i in range(start + 1, len(command)) if command[i].startswith("--")),
               len(command))
    return [str(arg) for arg in command[start + 1:end]]


def test_compose_file_is_valid_and_complete() -> None:
    services = compose()["services"]
    assert {"redis", "controller", "enroll", "agent-1", "agent-2"} <= set(services)
    assert "appendonly yes" in (ROOT / "deploy/redis/redis.conf").read_text()
    for name, service in services.items():
        known = REDIS_CLI_VARIABLES if name == "redis" else KNOWN
        for variable in service.get("environment", {}):
            assert variable in known, f"{name} sets unknown {variable}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for name in ("agent-1", "agent-2"):
        assert services[name]["command"] == ["pi-agent"]
        assert services[name]["environment"]["PIC_GPIO_BACKEND"] == "sim"


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((ROOT / "deploy/systemd/pi-agent.service").read_text())
    assert unit["Service"]["ExecStart"].endswith("pi-agent")
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_kubernetes_manifests_use_real_settings() -> None:
    for path in (ROOT / "deploy/kubernetes").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            text = yaml.safe_dump(document)
            for variable in re.findall(r"name: (PIC_[A-Z_]+)", text):
                assert variable in KNOWN, f"{path.name} sets unknown {variable}"


def test_compose_runs_redis_with_acl_users() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert "./deploy/redis/redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    user = user_args(command)
    assert user[:2] == ["pic-controller", "on"]
    assert PASSWORD_REF.fullmatch(user[2].removeprefix(">")) and user[2].startswith(">")
    assert user[3:] == CONTROLLER_ACL
    assert PASSWORD_REF.fullmatch(redis["environment"]["REDISCLI_AUTH"])
    test = redis["healthcheck"]["test"]
    assert test[:2] == ["CMD", "redis-cli"] and test[-1] == "ping"
    assert "-e" in test and test[test.index("--user") + 1] == "pic-controller"
    config = (ROOT / "deploy/redis/redis.conf").read_text()
    assert re.search(r"^user default off$", config, re.M)
    assert re.search(r"^protected-mode yes$", config, re.M)
    for line in ("tls-port", "tls-cert-file", "tls-key-file", "tls-ca-cert-file", "port 0"):
        assert re.search(rf"^# {line}\b", config, re.M), f"no commented {line} line"
    assert "rediss://" in config and "PIC_REDIS_CA_FILE" in config


def test_compose_gives_each_agent_its_own_credentials() -> None:
    document = compose()
    services = document["services"]
    assert "agent-creds" in document["volumes"]
    controller, enroll = services["controller"], services["enroll"]
    assert controller["environment"]["PIC_REDIS_URL"] == CONTROLLER_URL
    assert enroll["environment"]["PIC_REDIS_URL"] == CONTROLLER_URL
    assert enroll["build"] == controller["build"]
    assert enroll["command"] == ["pi-controller", "agent-credentials", "sim-pi-1", "sim-pi-2",
                                 "--out-dir", "/creds"]
    assert enroll["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert enroll["volumes"] == ["agent-creds:/creds"]
    assert enroll.get("restart", "no") == "no"
    for name, node in (("agent-1", "sim-pi-1"), ("agent-2", "sim-pi-2")):
        agent = services[name]
        assert agent["depends_on"] == {
            "enroll": {"condition": "service_completed_successfully"}}
        assert agent["volumes"] == ["agent-creds:/creds:ro"]
        assert agent["environment"]["PIC_REDIS_URL_FILE"] == f"/creds/{node}.url"
        assert agent["environment"]["PIC_NODE_ID"] == node
        assert "PIC_REDIS_URL" not in agent["environment"]
    header = (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    assert "PIC_ADMIN_TOKEN=" in header and "PIC_REDIS_PASSWORD=" in header


def literal_secrets(text: str) -> list[str]:
    """Passwords written out: in URLs, as ACL '>password' rules, in password settings.

    A reference to the environment (${VAR...}) or to a Kubernetes variable ($(VAR)) is
    not one; neither is a command substitution in a comment ("$(openssl rand ...)").
    """
    reference = r"(?:\$\{[A-Z_]+(?::\?[^}]*)?\}|\$\([A-Z_]+\))"
    found = []
    for match in re.finditer(r"rediss?://([^:@/\s]*):([^@\s]*)@", text):
        if not re.fullmatch(reference, match.group(2)):
            found.append(match.group(0))
    for match in re.finditer(rf"""["'\s]>({reference}|[^"'\s]+)""", text):
        if not re.fullmatch(reference, match.group(1)):
            found.append(match.group(0))
    for match in re.finditer(
            r"^\s*-?\s*(\w*(?:PASSWORD|TOKEN|AUTH|SECRET)\w*|requirepass|masterauth"
            r"|admin-token|password)\s*[:=\s]\s*(\S.*)$", text, re.M | re.I):
        value = match.group(2).strip().strip("\"'")
        if not (re.fullmatch(reference, value) or value.startswith(("{", "valueFrom"))
                or value in ("true", "false")):  # a switch, not a secret
            found.append(match.group(0))
    return found


def test_literal_secret_finder_finds_them() -> None:
    assert literal_secrets("PIC_REDIS_URL: redis://pic-controller:hunter2@redis:6379/0")
    assert literal_secrets('  - ">hunter2"')
    assert literal_secrets("  REDISCLI_AUTH: hunter2")
    assert literal_secrets("requirepass hunter2")
    assert literal_secrets("  admin-token: change-me")
    assert not literal_secrets('  - ">${PIC_REDIS_PASSWORD:?set PIC_REDIS_PASSWORD}"')
    assert not literal_secrets('value: "redis://u:$(REDIS_PASSWORD)@redis:6379/0"')
    assert not literal_secrets("      automountServiceAccountToken: false")


def test_no_password_is_written_in_the_deployment_files() -> None:
    for path in (ROOT / "docker-compose.yml", ROOT / "deploy/redis/redis.conf", *MANIFESTS):
        assert literal_secrets(path.read_text()) == [], path.name
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] == "Secret":
                raise AssertionError(f"{path.name} holds a Secret: create it with kubectl")


def workloads() -> list[tuple[str, dict]]:
    found = []
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
                found.append((f"{path.name}/{document['metadata']['name']}", document))
    return found


def env_refs(value: str) -> list[str]:
    return re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value)


def test_kubernetes_redis_urls_come_from_secrets() -> None:
    """A PIC_REDIS_URL is a secretKeyRef, or a value whose password is a $(VAR) that a
    secretKeyRef declared earlier in the same container (Kubernetes expands only those)."""
    users = 0
    for name, workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            declared: dict[str, dict] = {}
            for entry in container.get("env", []):
                if entry["name"] == "PIC_REDIS_URL":
                    users += 1
                    if "valueFrom" in entry:
                        assert "secretKeyRef" in entry["valueFrom"], name
                    else:
                        password = urlsplit(entry["value"]).password or ""
                        refs = env_refs(password)
                        assert refs and password == f"$({refs[0]})", f"{name}: {password}"
                        assert "secretKeyRef" in declared[refs[0]].get("valueFrom", {}), name
                declared[entry["name"]] = entry
    assert users >= 1, "no workload connects with PIC_REDIS_URL"


def test_kubernetes_redis_runs_locked_down() -> None:
    documents = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/redis.yaml").read_text()))
    by_kind = {document["kind"]: document for document in documents}
    config = by_kind["ConfigMap"]["data"]["redis.conf"]
    assert config == (ROOT / "deploy/redis/redis.conf").read_text()
    assert by_kind["Service"]["metadata"]["name"] == "redis"
    redis = by_kind["StatefulSet"]
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pod = redis["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "redis:7-alpine"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/data"] == "data"
    args = container["args"]
    assert args[0] == "redis-server" and args[1].startswith(
        next(path for path, volume in mounts.items() if volume == "config"))
    user = user_args(args)
    assert user[:2] == ["pic-controller", "on"]
    assert user[3:] == CONTROLLER_ACL
    (variable,) = env_refs(user[2])
    assert user[2] == f">$({variable})"
    env = {entry["name"]: entry for entry in container["env"]}
    assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "pi-controller-redis",
                                                         "key": "password"}
    assert env["REDISCLI_AUTH"]["valueFrom"] == env[variable]["valueFrom"]
    assert "redis-cli" in container["readinessProbe"]["exec"]["command"]
    # The same controller user as docker-compose.yml.
    assert user[3:] == user_args(compose()["services"]["redis"]["command"])[3:]


def test_kubernetes_agents_read_their_own_credentials_file() -> None:
    (daemonset,) = [w for name, w in workloads() if w["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {entry["name"]: entry for entry in container["env"]}
    names = [entry["name"] for entry in container["env"]]
    assert "PIC_REDIS_URL" not in env
    path = env["PIC_REDIS_URL_FILE"]["value"]
    assert path == "/creds/$(NODE_NAME).url"
    assert names.index("NODE_NAME") < names.index("PIC_REDIS_URL_FILE")
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/creds")
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "pi-agent-credentials"


def test_kubernetes_secrets_are_created_as_documented() -> None:
    """Every Secret the manifests use appears in a 'kubectl create secret' comment."""
    text = "\n".join(path.read_text() for path in MANIFESTS)
    documented = set(re.findall(r"^#.*create secret generic ([a-z0-9-]+)", text, re.M))
    used = set()
    for _, workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.add(ref["name"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                used.add(volume["secret"]["secretName"])
    assert {"pi-controller", "pi-controller-redis", "pi-agent-credentials"} <= used
    assert used <= documented, used - documented


def test_the_ha_profile_adds_a_replica_and_three_sentinels_and_points_everything_at_them(
        ) -> None:
    ha = yaml.safe_load((ROOT / "deploy/ha/compose.ha.yml").read_text())["services"]
    base = compose()["services"]
    sentinels = [name for name in ha if name.startswith("sentinel-")]
    assert len(sentinels) == 3 and all(ha[s]["profiles"] == ["ha"] for s in sentinels)
    assert ha["redis-replica"]["profiles"] == ["ha"]
    replica = ha["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1] == "redis"
    for name in ("redis", "redis-replica"):  # the same users on whichever is primary
        command = ha[name]["command"]
        assert {"pic-controller", "pic-sentinel", "+psync", "+slaveof"} <= set(command)
        assert command[command.index("--masteruser") + 1] == "pic-controller"
    for name in ("controller", "enroll"):
        url = ha[name]["environment"]["PIC_REDIS_URL"]
        assert url.startswith("redis+sentinel://pic-controller:") and url.endswith("/pic/0")
        assert all(f"{s}:26379" in url for s in sentinels)
        assert name in base
    script = ha["sentinel-1"]["command"][0]
    assert "sentinel monitor pic redis 6379 2" in script
    assert "sentinel auth-user pic pic-sentinel" in script


def test_the_agent_unit_is_confined() -> None:
    """systemd's own audit of the unit: at most 3.0 ("OK"), while the agent keeps what it
    needs (network, /proc and /sys to read, nothing to write)."""
    unit = ROOT / "deploy/systemd/pi-agent.service"
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, check=False)
    found = re.search(r"Overall exposure level for pi-agent.service: (\d+\.\d+)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    assert float(found.group(1)) <= 3.0, done.stdout
    text = unit.read_text()
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in text
    assert "ProcSubset=pid" not in text  # health reads /proc/stat, /proc/meminfo


def test_the_kubernetes_manifests_validate_and_are_locked_down() -> None:
    """Offline against the Kubernetes API schemas (kubernetes-validate); every container
    non-root on a read-only root with no capabilities; a NetworkPolicy for each workload."""
    import kubernetes_validate

    documents = [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]
    for document in documents:
        kubernetes_validate.validate(document, "1.31", strict=True)
    workloads = [d for d in documents if d["kind"] in ("Deployment", "DaemonSet",
                                                          "StatefulSet")]
    assert len(workloads) == 3
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    policies = {d["metadata"]["name"] for d in documents if d["kind"] == "NetworkPolicy"}
    assert policies == {"pi-controller", "redis"}
    assert not [d for d in documents if d["kind"] == "Secret"]  # made by instruction


def test_the_image_runs_unprivileged_with_a_state_volume_and_a_health_check() -> None:
    text = (ROOT / "deploy/docker/Dockerfile").read_text()
    assert re.search(r"^USER pic$", text, re.M)
    assert 'VOLUME ["/var/lib/pi-controller"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert not literal_secrets(text)
