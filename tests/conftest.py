"""Fixtures shared by the whole suite live in tests/fixtures/; each module there is a pytest plugin."""

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import uvloop

pytest_plugins = [
    "tests.fixtures.infra",
    "tests.fixtures.sandbox",
    "tests.fixtures.console",
    "tests.fixtures.smtp",
    "tests.fixtures.browser",
]


def pytest_report_header(config: pytest.Config) -> str:
    """The wall clock the suite runs at (`make test-hours` shifts it): the hour must not matter."""
    now = datetime.now(ZoneInfo("America/New_York"))
    return f"wall clock: {now:%Y-%m-%d %H:%M} America/New_York ({datetime.now(UTC):%H:%M} UTC)"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Tests run on the event loop the services run on in production (`shared.cli.run_event_loop`), watched."""
    return {"uvloop": _watched_loop}


# When the running test (its fixtures included) must have ended: pytest-timeout's limit, less a margin.
_deadline: float | None = None


@pytest.fixture(autouse=True)
def _hang_watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Arm the loops' watchdog for this test. pytest-timeout alone cannot stop a test that awaits something that
    never comes: its SIGALRM handler runs only when Python code runs, and an idle loop runs none."""
    global _deadline
    marker = request.node.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout") or 0)
    _deadline = time.monotonic() + seconds - 5 if seconds > 10 else None
    yield
    _deadline = None


def _watched_loop() -> asyncio.AbstractEventLoop:
    """uvloop, ticking once a second: past the test's deadline it prints where every task waits and cancels them,
    so a hung test fails with that trace instead of holding the whole run."""
    loop = uvloop.new_event_loop()

    def tick() -> None:
        global _deadline
        if _deadline is not None and time.monotonic() > _deadline:
            _deadline = time.monotonic() + 60  # its teardown gets a minute
            print("\n[watchdog] the test hung; where each task waits:", file=sys.stderr)
            for task in asyncio.all_tasks(loop):
                task.print_stack(file=sys.stderr)
                task.cancel()
        loop.call_later(1.0, tick)

    loop.call_soon(tick)
    return loop
