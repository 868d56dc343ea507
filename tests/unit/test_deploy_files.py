"""The deployment files can't run here (no Docker engine, no cluster): check them by reading.

Every PIC_* variable they set must be a real setting, or it would be silently ignored.
"""

from __future__ import annotations

import configparser
import dataclasses
import re
from pathlib import Path

import yaml

from agent.settings import AgentSettings
from common.settings import env_var
from controller.settings import ControllerSettings

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {env_var(f) for cls in (AgentSettings, ControllerSettings)
         for f in dataclasses.fields(cls)}


def test_compose_file_is_valid_and_complete() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "controller", "agent-1", "agent-2"} <= set(services)
    assert "appendonly yes" in (ROOT / "deploy/redis/redis.conf").read_text()
    for name, service in services.items():
        for variable in service.get("environment", {}):
            assert variable in KNOWN, f"{name} sets unknown {variable}"
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
