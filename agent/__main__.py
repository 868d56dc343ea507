"""``pi-agent``: the node agent's entry point."""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent.runner import serve
from agent.settings import AgentSettings
from common import logs, settings
from common.errors import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pi-agent", description="Pi-Controller node agent")
    settings.add_arguments(parser, AgentSettings)
    args = parser.parse_args(argv)
    try:
        config = settings.load(AgentSettings, args)
    except ValidationError as err:
        parser.error(str(err))
    logs.configure(config.log_level, config.log_json)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
