"""``pi-controller``: serve, demo, agent-credentials, events."""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from pathlib import Path

from common import grammar, logs, redis_client, settings
from common.errors import ValidationError
from controller.auth import MIN_BOOTSTRAP_TOKEN
from controller.settings import ControllerSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pi-controller",
                                     description="Pi-Controller: control plane for Pi fleets")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the controller (REST, UI, /ws)")
    settings.add_arguments(serve, ControllerSettings)
    demo = sub.add_parser("demo", help="embedded Redis + controller + simulated Pis")
    settings.add_arguments(demo, ControllerSettings)
    demo.add_argument("--nodes", type=int, default=3, help="simulated Pis (default 3)")
    demo.add_argument("--state", default=os.environ.get("PIC_DEMO_STATE", ".pi-controller-demo"),
                      help="directory for the demo's Redis data")
    creds = sub.add_parser("agent-credentials",
                           help="create or rotate agents' own Redis users; prints their URLs")
    settings.add_arguments(creds, ControllerSettings)
    creds.add_argument("node_ids", nargs="+", metavar="NODE_ID")
    creds.add_argument("--out-dir", default="", help="write DIR/NODE_ID.url (mode 0600) for "
                       "PIC_REDIS_URL_FILE instead of printing the URLs")
    events = sub.add_parser("events", help="print events; --follow streams them live")
    events.add_argument("--url", default=os.environ.get("PIC_URL", "http://127.0.0.1:8080/"))
    events.add_argument("--token", default=os.environ.get("PIC_TOKEN", ""),
                        help="API token (env PIC_TOKEN)")
    events.add_argument("--follow", "-f", action="store_true", help="stream live over /ws")
    events.add_argument("--types", default="", help="e.g. gpio.*,node.status.changed")
    events.add_argument("--node", default="")
    events.add_argument("--since", default="", help="resume after this event id")
    events.add_argument("--limit", type=int, default=20)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "events":
        from controller.events_cli import follow

        url = args.url if args.url.endswith("/") else args.url + "/"
        try:
            return asyncio.run(follow(url, args.token, types=args.types, node=args.node,
                                      since=args.since, follow_live=args.follow,
                                      limit=args.limit))
        except KeyboardInterrupt:
            return 0
    try:
        config = settings.load(ControllerSettings, args)
        redis_client.check_url(config.redis_target())
        for entries, flag in ((config.trusted_proxies, "--trusted-proxies"),
                              (config.metrics_allow, "--metrics-allow"),
                              (config.node_networks, "--node-networks")):
            grammar.networks(tuple(entries), flag)
        if bool(config.tls_cert) != bool(config.tls_key):
            raise ValueError("HTTPS needs both --tls-cert and --tls-key (PIC_TLS_CERT, "
                             "PIC_TLS_KEY)")
        if config.admin_token and len(config.admin_token) < MIN_BOOTSTRAP_TOKEN:
            raise ValueError(f"PIC_ADMIN_TOKEN must have at least {MIN_BOOTSTRAP_TOKEN} "
                             "characters (try: openssl rand -hex 32)")
        if config.tls_cert:
            from controller.server import tls_context

            try:
                tls_context(config)
            except (OSError, ssl.SSLError) as err:
                raise ValueError(f"cannot serve HTTPS with {config.tls_cert} and "
                                 f"{config.tls_key}: {err.strerror or err}") from None
    except (ValidationError, ValueError) as err:
        print(f"pi-controller: {err}", file=sys.stderr)  # one line: no usage dump
        return 2
    logs.configure(config.log_level, config.log_json)
    from controller.server import run

    if args.command == "agent-credentials":
        from controller.credentials_cli import issue

        try:
            return asyncio.run(issue(config, args.node_ids,
                                     Path(args.out_dir) if args.out_dir else None))
        except (ValidationError, ValueError, *redis_client.UNAVAILABLE) as err:  # type: ignore[misc]
            print(f"pi-controller agent-credentials: {err}", file=sys.stderr)
            return 1
    if args.command == "serve":
        from controller.server import serve as serve_forever

        run(serve_forever(config))
    else:
        from controller.demo import run_demo

        run(run_demo(config, args.nodes, Path(args.state)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
