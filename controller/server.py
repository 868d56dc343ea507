"""Running the application: listen, serve until SIGTERM/SIGINT, shut down in order."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from common.settings import describe
from controller.app import create_app
from controller.settings import ControllerSettings

logger = logging.getLogger(__name__)
SHUTDOWN_GRACE = 3.0


async def serve(settings: ControllerSettings, stop: asyncio.Event | None = None,
                started: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("pi-controller starting; settings %s", describe(settings))
    tls = tls_context(settings)
    runner = web.AppRunner(create_app(settings), access_log=None,
                           shutdown_timeout=SHUTDOWN_GRACE, handle_signals=False,
                           # aiohttp's keep-alive timer runs from the connection's start
                           # and is not reset by partial data: it bounds slow headers too.
                           keepalive_timeout=settings.http_idle_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024,
                           ssl_context=tls)
        await site.start()
        logger.info("serving on %s://%s:%d", "https" if tls else "http", settings.host,
                    settings.port)
        if started is not None:
            started.set()
        await stop.wait()
        logger.info("stopping")
    finally:
        await runner.cleanup()


def tls_context(settings: ControllerSettings) -> ssl.SSLContext | None:
    """HTTPS (and WSS) when a certificate is configured: TLS 1.2 or later."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def run(coro: object) -> None:
    """Run on uvloop where it is installed: its transports make fan-out cheaper."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)  # type: ignore[arg-type]
