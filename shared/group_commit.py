"""Group commit: concurrent handlers' database work in one round of statements per group (lead_fetcher, crm_sync).

Each handler awaits `GroupRunner.submit(item)`. When fewer than `concurrency` groups are in flight, the item goes
at once (no added wait at low load); items submitted while all are busy queue up and go together as the next
group, up to `max_size`. Under load, groups grow by themselves, so the round trips (and their CPU) per message
fall; nobody waits for a timer. `run(items)` returns one outcome per item: a value, or an exception raised in
that item's handler only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

GroupRun = Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]


class GroupRunner(Generic[T, R]):
    """Runs `run` over groups of concurrently submitted items.

    Args:
        run: does the work of one group; returns one outcome (value or exception) per item, in order. If it
            raises, every item of the group gets that exception.
        max_size: most items per group.
        concurrency: most groups in flight at once.
        on_group: called with each group's size (metrics).
    """

    def __init__(self, run: GroupRun[T, R], *, max_size: int = 100, concurrency: int = 1,
                 on_group: Callable[[int], None] | None = None) -> None:
        self._run = run
        self._max_size = max(1, max_size)
        self._concurrency = max(1, concurrency)
        self._on_group = on_group
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._workers: set[asyncio.Task[None]] = set()  # strong references to running workers
        self._active = 0  # workers draining; decremented in the same step that finds the queue empty

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._active < self._concurrency:
            self._active += 1
            worker = asyncio.get_running_loop().create_task(self._drain(), name="group_runner")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        # shield: a cancelled handler (shutdown) must not cancel the group other handlers share.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._run_group()
        finally:
            self._active -= 1

    async def _run_group(self) -> None:
        group, self._queue = self._queue[: self._max_size], self._queue[self._max_size:]
        if self._on_group is not None:
            self._on_group(len(group))
        try:
            outcomes: Sequence[R | BaseException] = await self._run([item for item, _ in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"group run returned {len(outcomes)} outcomes for {len(group)} items")
        except Exception as exc:
            outcomes = [exc] * len(group)
        except BaseException:  # cancelled (the loop is closing): nobody may be left waiting forever
            for _, future in group:
                future.cancel()
            raise
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
                with contextlib.suppress(BaseException):
                    future.exception()  # nobody may await it any more (cancelled handler): no warning
            else:
                future.set_result(outcome)
