"""Typed keys of the console's aiohttp application and request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import jinja2
from aiohttp import web

from services.console.meta_health import MetaHealth
from services.console.parked import ParkedCounts, ParkedListing
from services.console.security import LoginLimiter, Session
from services.console.settings import ConsoleSettings
from shared.targets import TargetBook


@dataclass
class ConsoleContext:
    """What the request handlers need: settings, templates, the login limiter, the database pool."""

    settings: ConsoleSettings
    templates: jinja2.Environment
    limiter: LoginLimiter
    pool: Callable[[], asyncpg.Pool]  # the service's pool, opened when the service starts
    qualified_events: list[str]
    signed_events: list[str]
    parked: ParkedCounts
    amqp_url: str  # secret: never logged
    targets: TargetBook  # each account's cost targets (Performance's colours)
    meta: MetaHealth | None = None  # the last Meta checks; None when CONSOLE_META_CHECK_SECONDS is 0
    listing: ParkedListing = field(default_factory=ParkedListing)  # the Stuck page's last reading


CONTEXT: web.AppKey[ConsoleContext] = web.AppKey("console_context", ConsoleContext)
SESSION: web.RequestKey[Session] = web.RequestKey("console_session", Session)
