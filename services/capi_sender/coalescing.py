"""Coalescing in process: many concurrent handlers, one request per batch, each handler awaiting its own outcome.

`Batcher` groups items per key (pixel, test code) and flushes a group when it holds `max_size` items, when no item
joined it for `linger` seconds, or when its first item has waited `max_age` seconds. The linger counts from the
latest item, not the first: while the broker is still handing over a backlog (which, one message and one ack at a
time, can take longer than a second for 1,000 messages) the batch keeps filling instead of going out a third full;
`max_age` bounds the wait under a steady trickle. The flush function resolves each item's future; a handler acks
its message only when its future resolves, i.e. after Meta accepted the request and the send was recorded.

`Coalescer` turns many single-key lookups made within a few milliseconds into one query (the stored leads).

Timers and flushes are plain asyncio tasks, not service background jobs: on shutdown the broker drains in-flight
handlers, and those handlers still need their batches flushed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
V = TypeVar("V")


@dataclass
class Entry(Generic[T]):
    """One submitted item and the future its submitter awaits."""

    item: T
    future: asyncio.Future[Any]

    def resolve(self, result: Any) -> None:
        if not self.future.done():  # a handler cancelled on shutdown leaves a cancelled future
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass
class _Buffer(Generic[T]):
    first: float
    last: float
    entries: list[Entry[T]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


FlushFn = Callable[[Any, list[Entry[Any]]], Awaitable[None]]


class FlushIncompleteError(RuntimeError):
    """The flush function returned without an outcome for an item (a bug): the message is retried."""


class Batcher(Generic[K, T]):
    """Group submitted items per key; flush on size or linger; at most `concurrency` flushes at a time.

    Args:
        flush: `async (key, entries)` that resolves every entry's future (leftovers are failed for it).
        max_size: flush as soon as a group holds this many items.
        linger: a group goes out once no item joined it for this many seconds.
        max_age: ... or once its first item waited this long, even if items keep coming.
        concurrency: flushes (requests) running at once; the rest queue for a slot.
    """

    def __init__(
        self, flush: FlushFn, *, max_size: int, linger: float, max_age: float = 10.0, concurrency: int = 4
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._flush = flush
        self.max_size = max_size
        self.linger = max(0.0, linger)
        self.max_age = max(self.linger, max_age)
        self.closing = False
        self._slots = asyncio.Semaphore(concurrency)
        self._buffers: dict[K, _Buffer[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, key: K, item: T) -> asyncio.Future[Any]:
        """Add an item to its key's group; the returned future resolves when its batch was handled."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        entry: Entry[T] = Entry(item, loop.create_future())
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = _Buffer(first=now, last=now)
            # Closing: no linger, but the items submitted in this same step still go out together.
            buffer.timer = loop.call_later(0 if self.closing else self.linger, self._expire, key, buffer)
        buffer.last = now
        buffer.entries.append(entry)
        if len(buffer.entries) >= self.max_size:
            self._detach(key, buffer)
        return entry.future

    def flush_all(self) -> None:
        """Send every group now, and from now on without linger (the service is stopping)."""
        self.closing = True
        for key, buffer in list(self._buffers.items()):
            self._detach(key, buffer)

    @property
    def pending(self) -> int:
        """Items waiting in groups that were not flushed yet."""
        return sum(len(buffer.entries) for buffer in self._buffers.values())

    async def drain(self) -> None:
        """Flush every group now and wait for all flushes."""
        for key, buffer in list(self._buffers.items()):
            self._detach(key, buffer)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _expire(self, key: K, buffer: _Buffer[T]) -> None:
        if self._buffers.get(key) is not buffer:
            return
        loop = asyncio.get_running_loop()
        due = min(buffer.last + self.linger, buffer.first + self.max_age)
        wait = due - loop.time()
        # An item joined since the timer was set: wait for the rest of the new linger (unless stopping).
        if wait > 0.001 and not self.closing:
            buffer.timer = loop.call_later(wait, self._expire, key, buffer)
        else:
            self._detach(key, buffer)

    def _detach(self, key: K, buffer: _Buffer[T]) -> None:
        del self._buffers[key]
        if buffer.timer is not None:
            buffer.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(key, buffer.entries), name=f"capi-flush-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, entries: list[Entry[T]]) -> None:
        async with self._slots:
            try:
                await self._flush(key, entries)
            except Exception as exc:  # every waiting handler gets the failure and retries its message
                logger.exception("batch flush failed", extra={"events": len(entries)})
                for entry in entries:
                    entry.fail(exc)
                return
        for entry in entries:
            entry.fail(FlushIncompleteError("batch flush returned without an outcome for this event"))


class Coalescer(Generic[K, V]):
    """Gather lookups made within `window` seconds into one `fetch(keys) -> {key: value}` call.

    Args:
        fetch: loads many keys at once; a key missing from the answer resolves to None.
        window: how long the first lookup waits for others (a few milliseconds).
        max_keys: fetch early once this many distinct keys wait.
    """

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        *,
        window: float = 0.005,
        max_keys: int = 1000,
    ) -> None:
        self._fetch = fetch
        self.window = window
        self.max_keys = max_keys
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if len(self._waiting) >= self.max_keys:
            self._start()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._start)
        return await future

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, {}
        if not waiting:
            return
        task = asyncio.get_running_loop().create_task(self._run(waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, waiting: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch(list(waiting))
        except Exception as exc:
            logger.warning("lookup of %s keys failed: %s", len(waiting), type(exc).__name__)
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key))

