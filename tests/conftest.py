"""Fixtures shared by the whole suite live in tests/fixtures/; each module there is a pytest plugin."""

from collections.abc import Callable
from typing import Any

import pytest
import uvloop

pytest_plugins = [
    "tests.fixtures.infra",
    "tests.fixtures.sandbox",
    "tests.fixtures.console",
]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Tests run on the event loop the services run on in production (`shared.cli.run_event_loop`)."""
    return {"uvloop": uvloop.new_event_loop}
