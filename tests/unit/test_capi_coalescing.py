"""The CAPI sender's in-process batcher: flush on size, on linger, and at once (together) when stopping."""

from __future__ import annotations

import asyncio
from typing import Any

from services.capi_sender.coalescing import Batcher, Entry


class Recorder:
    def __init__(self) -> None:
        self.flushed: list[tuple[str, list[int]]] = []

    async def flush(self, key: str, entries: list[Entry[int]]) -> None:
        self.flushed.append((key, [entry.item for entry in entries]))
        for entry in entries:
            entry.resolve(f"sent {entry.item}")


async def test_a_full_group_goes_at_once_and_the_rest_after_the_linger() -> None:
    recorder = Recorder()
    batcher: Batcher[str, int] = Batcher(recorder.flush, max_size=3, linger=0.01)
    futures = [batcher.submit("pixel", i) for i in range(4)]
    assert await asyncio.gather(*futures) == ["sent 0", "sent 1", "sent 2", "sent 3"]
    assert recorder.flushed == [("pixel", [0, 1, 2]), ("pixel", [3])]


async def test_groups_are_per_key() -> None:
    recorder = Recorder()
    batcher: Batcher[str, int] = Batcher(recorder.flush, max_size=10, linger=0.01)
    await asyncio.gather(batcher.submit("a", 1), batcher.submit("b", 2), batcher.submit("a", 3))
    assert sorted(recorder.flushed) == [("a", [1, 3]), ("b", [2])]


async def test_when_stopping_items_submitted_together_still_go_in_one_request() -> None:
    recorder = Recorder()
    batcher: Batcher[str, int] = Batcher(recorder.flush, max_size=1000, linger=60)
    waiting = batcher.submit("pixel", 0)
    batcher.flush_all()  # the service stops: no more lingering ...
    later: list[Any] = [batcher.submit("pixel", i) for i in range(1, 6)]  # ... but a drained batch stays one request
    assert await asyncio.wait_for(asyncio.gather(waiting, *later), timeout=5) == [f"sent {i}" for i in range(6)]
    assert recorder.flushed == [("pixel", [0]), ("pixel", [1, 2, 3, 4, 5])]
