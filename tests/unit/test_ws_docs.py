"""docs/websocket.md lists every close code and every ws.error code the server sends."""

from __future__ import annotations

from pathlib import Path

from controller.ws.codes import CloseCode, ErrorCode

DOC = (Path(__file__).resolve().parents[2] / "docs" / "websocket.md").read_text()


def table_after(heading: str) -> list[str]:
    """The first column of the first table after ``heading`` (header row left out)."""
    lines = DOC.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:  # past the header and its separator
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip().strip("`"))
    return rows


def test_the_close_code_table_is_the_enum() -> None:
    documented = [int(code) for code in table_after("## Close codes")]
    assert documented == sorted(int(code) for code in CloseCode)


def test_the_ws_error_table_is_the_enum() -> None:
    documented = table_after("`ws.error` codes:")
    assert sorted(documented) == sorted(code.value for code in ErrorCode)
