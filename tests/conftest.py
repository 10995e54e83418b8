"""Fixtures shared by the whole suite live in tests/fixtures/; each module there is a pytest plugin."""

from collections.abc import Callable
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
    """Tests run on the event loop the services run on in production (`shared.cli.run_event_loop`)."""
    return {"uvloop": uvloop.new_event_loop}
