"""The group-commit helper (`shared.group_commit`): groups form only while busy, outcomes stay per item."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.group_commit import GroupRunner


class Recorder:
    """A group run that records its groups and waits until released (the fake of a database round)."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.groups.append(list(items))
        await self.release.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


@pytest.fixture
def runner_cls() -> type[GroupRunner[int, int]]:
    return GroupRunner


async def test_alone_goes_at_once_and_waiting_ones_share_the_next_group(
    runner_cls: type[GroupRunner[int, int]],
) -> None:
    run = Recorder()
    sizes: list[int] = []
    runner = runner_cls(run, max_size=3, on_group=sizes.append)

    first = asyncio.create_task(runner.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert run.groups == [[1]]  # no timer: the first item went at once
    rest = [asyncio.create_task(runner.submit(i)) for i in range(2, 7)]  # arrive while the first group runs
    run.release.set()

    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert run.groups == [[1], [2, 3, 4], [5, 6]]  # bounded by max_size
    assert sizes == [1, 3, 2]


async def test_an_item_failure_fails_only_its_own_caller(runner_cls: type[GroupRunner[int, int]]) -> None:
    run = Recorder()
    run.release.set()
    runner = runner_cls(run, max_size=10)

    results = await asyncio.gather(*(runner.submit(i) for i in (1, -2, 3)), return_exceptions=True)

    assert results[0] == 10
    assert isinstance(results[1], ValueError)
    assert results[2] == 30


async def test_a_group_that_raises_fails_its_items_and_the_runner_goes_on(
    runner_cls: type[GroupRunner[int, int]],
) -> None:
    calls = 0

    async def flaky(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone")
        return list(items)

    runner = runner_cls(flaky)
    with pytest.raises(ConnectionError):
        await runner.submit(1)
    assert await runner.submit(2) == 2


async def test_concurrency_allows_several_groups_in_flight(runner_cls: type[GroupRunner[int, int]]) -> None:
    run = Recorder()
    runner = runner_cls(run, concurrency=2)

    async def settle() -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(runner.submit(1))]
    await settle()
    tasks.append(asyncio.create_task(runner.submit(2)))
    await settle()
    assert run.groups == [[1], [2]]  # the second did not wait for the first group
    tasks += [asyncio.create_task(runner.submit(i)) for i in (3, 4)]
    await settle()
    assert run.groups == [[1], [2]]  # both busy: these wait, together
    run.release.set()
    assert await asyncio.gather(*tasks) == [10, 20, 30, 40]
    assert run.groups == [[1], [2], [3, 4]]
