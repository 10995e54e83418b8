"""Read leads from Meta, coalescing concurrent reads into Graph batch calls.

Each handler awaits `LeadReader.read(leadgen_id, page_id)`. The first read opens a short window
(`LEAD_FETCH_BATCH_WINDOW_MS`); every read arriving in it joins the same batch call (up to 50, Meta's maximum;
a full batch goes at once). Two reads of the same lead in one window share one operation. Each operation still
counts as one call against the Page's leadgen quota (docs/meta-api.md §3): batching saves round trips, not quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.lead_fetcher import metrics
from services.lead_fetcher.logic import FORM_FIELDS, LEAD_FIELDS
from shared.graph import BatchRequest, GraphError, Scope
from shared.graph.batch import MAX_BATCH

if TYPE_CHECKING:

    from pydantic import SecretStr

    from shared.graph import GraphClient

logger = logging.getLogger(__name__)

# Longest the client may pace or wait out a block inside a batch before it gives the item back as throttled
# (the handler then turns it into a delayed retry rather than holding a worker).
MAX_WAIT_SECONDS = 1.0


@dataclass
class _Pending:
    futures: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)


class LeadReader:
    """Coalesces lead reads into batch calls.

    Args:
        graph: the process's Graph client.
        token: the Page access token (reads of lead data need it, docs/meta-api.md §7.1).
        window_seconds: how long the first read of a batch waits for companions (0: only reads already queued
            in the same event-loop turn join).
        max_batch: operations per call (Meta's maximum is 50).
    """

    def __init__(self, graph: GraphClient, token: SecretStr | str | None, *,
                 window_seconds: float, max_batch: int = MAX_BATCH) -> None:
        self._graph = graph
        self._token = token
        self._window = window_seconds
        self._max_batch = max(1, min(MAX_BATCH, max_batch))
        self._pending = _Pending()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._form_names: dict[str, asyncio.Task[str | None]] = {}
        self.calls = 0  # HTTP calls made (batch or single), for metrics and tests

    async def read(self, leadgen_id: str, page_id: str) -> dict[str, Any]:
        """The lead object, or raise the typed GraphError Meta answered for it."""
        future = self._pending.futures.get(leadgen_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending.futures[leadgen_id] = future
            self._pending.pages[leadgen_id] = page_id
            if len(self._pending.futures) >= self._max_batch:
                self._flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._window, self._flush)
        # shield: a cancelled handler (shutdown) must not cancel a read other handlers share.
        return await asyncio.shield(future)

    async def form_name(self, form_id: str | None, page_id: str) -> str | None:
        """The lead form's name (the Lead node has none), read once per form and kept for the process's life;
        concurrent leads of a form share the one read.

        Best effort: a failed read leaves the name out (the lead is stored without it) and is tried again for the
        form's next lead.
        """
        if not form_id:
            return None
        read = self._form_names.get(form_id)
        if read is None:
            read = asyncio.get_running_loop().create_task(self._read_form_name(form_id, page_id))
            self._form_names[form_id] = read
        return await asyncio.shield(read)

    async def _read_form_name(self, form_id: str, page_id: str) -> str | None:
        try:
            self.calls += 1
            body = await self._graph.get(form_id, {"fields": FORM_FIELDS}, token=self._token,
                                         scope=Scope.leadgen(page_id), max_wait=MAX_WAIT_SECONDS)
        except Exception as exc:
            self._form_names.pop(form_id, None)  # the next lead of the form tries again
            logger.warning("reading the name of form %s failed: %s", form_id, type(exc).__name__,
                           extra={"form_id": form_id, "page_id": page_id})
            return None
        name = body.get("name") if isinstance(body, dict) else None
        return name if isinstance(name, str) and name else None

    async def close(self) -> None:
        """Flush what is pending and wait for in-flight calls (used on stop)."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, _Pending()
        if not pending.futures:
            return
        task = asyncio.get_running_loop().create_task(self._run(pending), name="lead_fetcher.read_batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, pending: _Pending) -> None:
        ids = list(pending.futures)
        metrics.BATCH_SIZE.labels("graph_read").observe(len(ids))
        try:
            self.calls += 1
            if len(ids) == 1:
                results = [await self._read_one(ids[0], pending.pages[ids[0]])]
            else:
                batch = await self._graph.batch(
                    [BatchRequest.get(i, {"fields": LEAD_FIELDS}, scope=Scope.leadgen(pending.pages[i])) for i in ids],
                    token=self._token,
                    max_wait=MAX_WAIT_SECONDS,
                )
                results = [r.error if r.error is not None else r.body for r in batch]
        except Exception as exc:  # the whole call failed: every read in it gets the same error
            for future in pending.futures.values():
                if not future.done():
                    future.set_exception(exc)
            return
        logger.debug("lead batch read", extra={"leads": len(ids)})
        for leadgen_id, result in zip(ids, results, strict=True):
            future = pending.futures[leadgen_id]
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            elif isinstance(result, dict):
                future.set_result(result)
            else:
                future.set_exception(GraphError(f"unexpected lead body type {type(result).__name__}"))
        # Futures nobody awaits any more (cancelled handlers) must not log "exception never retrieved".
        for future in pending.futures.values():
            if future.done() and not future.cancelled():
                with contextlib.suppress(BaseException):
                    future.exception()

    async def _read_one(self, leadgen_id: str, page_id: str) -> dict[str, Any] | GraphError:
        try:
            return await self._graph.get(leadgen_id, {"fields": LEAD_FIELDS}, token=self._token,
                                         scope=Scope.leadgen(page_id), max_wait=MAX_WAIT_SECONDS)
        except GraphError as exc:
            return exc
