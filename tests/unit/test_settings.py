"""Settings: flags beat PIC_* variables beat defaults; bad values name the variable."""

from __future__ import annotations

import argparse

import pytest

from agent.settings import AgentSettings
from common import settings
from common.errors import ValidationError
from controller.settings import ControllerSettings


def parse(cls: type, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, cls)
    return parser.parse_args(argv)


def test_env_then_flag_precedence() -> None:
    env = {"PIC_PORT": "9000", "PIC_REDIS_URL": "redis://a:6379/0"}
    loaded = settings.load(ControllerSettings, parse(ControllerSettings, ["--port", "9100"]), env)
    assert loaded.port == 9100
    assert loaded.redis_url == "redis://a:6379/0"
    assert settings.load(ControllerSettings, None, {}).port == 8080


def test_types_lists_and_booleans() -> None:
    env = {"PIC_HEARTBEAT_INTERVAL": "0.5", "PIC_MDNS": "true",
           "PIC_MDNS_INTERFACES": "127.0.0.1, eth0"}
    loaded = settings.load(AgentSettings, None, env)
    assert loaded.heartbeat_interval == 0.5
    assert loaded.mdns is True
    assert loaded.mdns_interfaces == ["127.0.0.1", "eth0"]
    flagged = settings.load(AgentSettings, parse(AgentSettings, ["--no-mdns"]), env)
    assert flagged.mdns is False


def test_bad_value_names_flag_and_variable() -> None:
    with pytest.raises(ValidationError) as info:
        settings.load(ControllerSettings, None, {"PIC_PORT": "eighty"})
    assert "--port" in info.value.field and "PIC_PORT" in info.value.field


def test_describe_masks_secrets_and_url_passwords() -> None:
    loaded = ControllerSettings(admin_token="pic_supersecret",
                                redis_url="redis://:hunter2@127.0.0.1:6379/0")
    shown = str(settings.describe(loaded))
    assert "pic_supersecret" not in shown
    assert "hunter2" not in shown
    assert "127.0.0.1:6379" in shown
