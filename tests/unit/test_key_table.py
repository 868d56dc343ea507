"""docs/redis.md lists every key of common/keys.py, and what the doc says an agent may touch
is exactly what the ACL rules the controller gives an agent allow."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from common.keys import Keys
from controller.store.agents import acl_rules

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs/redis.md").read_text()
NOT_KEYS = {"agent_user", "prefix", "rings"}
"""Members of Keys that are not key (or channel) names."""


def documented() -> dict[str, str]:
    """key pattern -> its "agent" column, from the doc's key table."""
    section = DOC.split("## Keys", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = {}
    for row in rows:
        cells = _cells(row)
        table[cells[0].strip("`")] = cells[-1]
    return table


def _cells(row: str) -> list[str]:
    """A Markdown table row's cells (a pipe escaped as \\| stays in its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def in_code() -> set[str]:
    keys, patterns = Keys(), set()
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name in NOT_KEYS:
            continue
        if isinstance(member, property):
            patterns.add(getattr(keys, name))
        elif inspect.isfunction(member):
            (param,) = list(inspect.signature(member).parameters)[1:]
            patterns.add(getattr(keys, name)("{" + param + "}"))
    return patterns


def test_every_key_is_documented_and_every_documented_key_exists() -> None:
    assert set(documented()) == in_code()


def test_the_agent_column_is_what_the_acl_allows() -> None:
    node = "{node_id}"
    allowed = {}
    rules = acl_rules(Keys(), node, "0" * 64)
    for rule in rules:
        match = re.fullmatch(r"\((%R)?~(\S+) (.+)\)", rule)
        if match:
            allowed[match.group(2)] = set(match.group(3).replace("+", "").split())
        elif rule.startswith("&"):
            assert "+publish" in rules
            allowed[rule[1:]] = {"publish"}
    table = documented()
    assert {k for k, v in table.items() if v != "none"} == set(allowed)
    for key, commands in allowed.items():
        spelled = {c.lower() for c in re.findall(r"`([A-Z]+(?: [A-Z]+)?)`", table[key])}
        assert spelled == {c.replace("|", " ") for c in commands}, key


def test_every_owner_is_a_store_module_that_exists() -> None:
    section = DOC.split("## Keys", 1)[1].split("\n## ", 1)[0]
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        owner = _cells(row)[3]
        modules = re.findall(r"`(controller/[\w/]+\.py)`", owner)
        assert modules or "agent" in owner, row
        for module in modules:
            assert module.startswith("controller/store/"), row
            assert (ROOT / module).is_file(), module
