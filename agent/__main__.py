"""``pi-agent``: the node agent's entry point."""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent.runner import serve
from agent.settings import AgentSettings
from common import logs, redis_client, settings
from common.errors import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pi-agent", description="Pi-Controller node agent")
    settings.add_arguments(parser, AgentSettings)
    args = parser.parse_args(argv)
    try:
        config = settings.load(AgentSettings, args)
        redis_client.check_url(config.redis_target())
    except (ValidationError, ValueError) as err:
        print(f"pi-agent: {err}", file=sys.stderr)  # one line: no usage dump
        return 2
    logs.configure(config.log_level, config.log_json)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
