"""Leadgen webhook delivery and the background lead generator.

Deliveries are Meta-shaped (docs/meta-api.md §6.4), signed with `X-Hub-Signature-256` over the exact bytes sent
(escaped-unicode JSON, docs/meta-api.md §6.2), retried on non-200 with exponential backoff compressed in time (Meta
retries over 36 h), and `drop_rate` makes some leads never be delivered so backfill has something to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .core import Sandbox
from .keys import SANDBOX
from .state import Node

logger = logging.getLogger(__name__)


@dataclass
class WebhookConfig:
    target_url: str | None = None
    app_secret: str | None = None  # defaults to the sandbox app secret
    rate_per_second: float = 0.0
    drop_rate: float = 0.0
    batch_size: int = 1
    max_attempts: int = 6
    retry_base_seconds: float = 0.2
    timeout_seconds: float = 5.0
    form_id: str | None = None  # generator's form (default: alternate over the Page's forms)
    require_subscription: bool = False  # only deliver for Pages with subscribed_apps leadgen

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["app_secret"] = "***" if self.app_secret else None
        return out


class WebhookManager:
    """Owns the HTTP session, the delivery tasks and the generator task."""

    def __init__(self, sb: Sandbox, session: aiohttp.ClientSession) -> None:
        self.sb = sb
        self.session = session
        self.config = WebhookConfig()
        self.deliveries: list[dict[str, Any]] = []
        self._pending: list[Node] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._generator: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ configuration
    def configure(self, patch: dict[str, Any]) -> WebhookConfig:
        for key, value in patch.items():
            if not hasattr(self.config, key):
                raise ValueError(f"unknown webhook setting {key!r}")
            setattr(self.config, key, value)
        self.config.batch_size = max(1, min(1000, int(self.config.batch_size)))
        self._restart_generator()
        return self.config

    async def reset(self) -> None:
        await self.close()
        self.config = WebhookConfig()
        self.deliveries = []
        self._pending = []

    async def close(self) -> None:
        tasks = list(self._tasks)
        if self._generator is not None:
            tasks.append(self._generator)
            self._generator = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _restart_generator(self) -> None:
        if self._generator is not None:
            self._generator.cancel()
            self._generator = None
        if self.config.rate_per_second > 0:
            self._generator = asyncio.create_task(self._generate())

    # ------------------------------------------------------------------ leads in
    def submit(self, leads: list[Node]) -> None:
        """Queue leads for delivery (dropping some per `drop_rate`), flushing full batches."""
        for lead in leads:
            if self.sb.roll(self.config.drop_rate):
                self.deliveries.append(self._record([lead], status="dropped"))
                continue
            if self.config.require_subscription and "leadgen" not in self.sb.state.subscribed_apps.get(
                lead.page_id or "", []
            ):
                self.deliveries.append(self._record([lead], status="not_subscribed"))
                continue
            self._pending.append(lead)
        while len(self._pending) >= self.config.batch_size:
            batch, self._pending = self._pending[: self.config.batch_size], self._pending[self.config.batch_size :]
            self._spawn(batch)

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._spawn(batch)

    def _spawn(self, leads: list[Node]) -> None:
        record = self._record(leads, status="pending")
        self.deliveries.append(record)
        task = asyncio.create_task(self._deliver(leads, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _record(leads: list[Node], status: str) -> dict[str, Any]:
        return {
            "leadgen_ids": [lead.id for lead in leads],
            "status": status,
            "attempts": 0,
            "last_status": None,
            "delivered_at": None,
        }

    # ------------------------------------------------------------------ delivery
    def payload(self, leads: list[Node]) -> bytes:
        entries: dict[str, dict[str, Any]] = {}
        now = int(self.sb.state.now())
        for lead in leads:
            page = lead.page_id or ""
            entry = entries.setdefault(page, {"id": page, "time": now, "changes": []})
            f = lead.fields
            value: dict[str, Any] = {
                "leadgen_id": int(lead.id),
                "page_id": int(page),
                "form_id": int(f["form_id"]),
                "created_time": int(f["created_time"]),
            }
            if f.get("ad_id"):
                value["adgroup_id"] = int(f["ad_id"])
                value["ad_id"] = int(f["ad_id"])
            entry["changes"].append({"field": "leadgen", "value": value})
        # ensure_ascii: Meta signs the escaped-unicode form of the JSON.
        return json.dumps({"object": "page", "entry": list(entries.values())}).encode()

    def signature(self, body: bytes) -> str:
        secret = self.config.app_secret or self.sb.config.app_secret
        return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    async def _deliver(self, leads: list[Node], record: dict[str, Any]) -> None:
        cfg = self.config
        if not cfg.target_url:
            record["status"] = "no_target"
            return
        body = self.payload(leads)
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": self.signature(body),
            "User-Agent": "facebookexternalua",
        }
        for attempt in range(1, max(1, cfg.max_attempts) + 1):
            record["attempts"] = attempt
            try:
                timeout = aiohttp.ClientTimeout(total=cfg.timeout_seconds)
                async with self.session.post(cfg.target_url, data=body, headers=headers, timeout=timeout) as resp:
                    await resp.read()
                    record["last_status"] = resp.status
                    if resp.status == 200:
                        record["status"] = "delivered"
                        record["delivered_at"] = time.time()
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                record["last_status"] = type(exc).__name__
            logger.info("webhook delivery attempt failed", extra={"attempt": attempt, "leads": len(leads)})
            await asyncio.sleep(cfg.retry_base_seconds * (2 ** (attempt - 1)))
        record["status"] = "failed"

    async def _generate(self) -> None:
        forms = sorted(self.sb.state.of_kind("leadgen_form"), key=lambda n: int(n.id))
        i = 0
        while True:
            await asyncio.sleep(1.0 / self.config.rate_per_second)
            form_id = self.config.form_id or forms[i % len(forms)].id
            i += 1
            lead = self.sb.state.create_lead(form_id)
            self.submit([lead])


async def webhook_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: one client session and the delivery tasks for the app's lifetime."""
    sb = app[SANDBOX]
    async with aiohttp.ClientSession() as session:
        sb.webhooks = WebhookManager(sb, session)
        yield
        await sb.webhooks.close()
        sb.release_hangs.set()
