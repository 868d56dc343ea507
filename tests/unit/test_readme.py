"""The README's promises: two commands, CI runs the test one, the settings table is complete."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def generated_tables() -> str:
    loader = importlib.machinery.SourceFileLoader("config_table",
                                                  str(ROOT / "scripts/config-table"))
    spec = importlib.util.spec_from_loader("config_table", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return str(module.tables())


def test_configuration_table_matches_the_settings() -> None:
    section = re.search(r"<!-- config:start -->\n(.*)\n<!-- config:end -->", README, re.S)
    assert section, "README lacks the configuration markers"
    assert section.group(1).strip() == generated_tables().strip(), (
        "README configuration is stale: regenerate with scripts/config-table")


def test_two_commands_and_ci_runs_the_test_one() -> None:
    assert "./scripts/demo" in README
    assert "./scripts/test" in README
    assert "./scripts/test" in (ROOT / ".ci/run").read_text()
