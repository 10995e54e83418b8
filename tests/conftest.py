"""Fixtures shared by the whole suite live in tests/fixtures/; each module there is a pytest plugin."""

pytest_plugins = [
    "tests.fixtures.infra",
    "tests.fixtures.sandbox",
]
