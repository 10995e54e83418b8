"""Typed application keys (one place)."""

from __future__ import annotations

from aiohttp import web

from .core import Sandbox

SANDBOX = web.AppKey("graph_sandbox", Sandbox)
