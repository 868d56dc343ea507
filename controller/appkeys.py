"""Typed keys for everything the aiohttp application holds (no module globals)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from common.redis_client import Redis
from controller.api.outage import Outage
from controller.auth import TokenStore
from controller.feed import Feed
from controller.gpio_service import GpioService
from controller.metrics import Metrics
from controller.settings import ControllerSettings
from controller.store import Store
from controller.store.agents import AgentAccess
from controller.ws.hub import Hub
from controller.ws.service import WebSockets

SETTINGS = web.AppKey("settings", ControllerSettings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", Hub)
WS = web.AppKey("ws", WebSockets)
METRICS = web.AppKey("metrics", Metrics)
OUTAGE = web.AppKey("outage", Outage)
FEED = web.AppKey("feed", Feed)
TOKENS = web.AppKey("tokens", TokenStore)
GPIO = web.AppKey("gpio", GpioService)
AGENTS = web.AppKey("agents", AgentAccess)
BOOTSTRAPPED = web.AppKey("bootstrapped", asyncio.Event)
"""Set once the bootstrap admin token is installed (part of /readyz)."""
