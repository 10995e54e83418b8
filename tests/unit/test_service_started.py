"""`Service.on_started`: the one typed way to reach what a service builds once its resources are open."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.service import Service, Started
from shared.settings import BrokerSettings, Settings


@dataclass
class Deps:
    name: str
    closed: bool = False


def service() -> Service:
    return Service("demo", Settings(broker=BrokerSettings(amqp_url="amqp://guest:guest@127.0.0.1:1/none")),
                   uses_database=False)


async def test_dependencies_are_refused_before_start_and_after_stop() -> None:
    svc = service()

    async def close(deps: Deps) -> None:
        deps.closed = True

    started = svc.on_started(lambda s: Deps(s.name), close=close)
    with pytest.raises(RuntimeError, match="demo: dependencies used before start"):
        started()
    await started.open(svc)
    deps = started()
    assert deps == Deps("demo")
    assert svc.dependencies(Deps) is deps
    await started.aclose()
    assert deps.closed
    with pytest.raises(RuntimeError):
        started()


async def test_an_async_build_is_awaited() -> None:
    svc = service()

    async def build(s: Service) -> Deps:
        return Deps(f"{s.name}-async")

    started: Started[Deps] = svc.on_started(build)
    await started.open(svc)
    assert started().name == "demo-async"


def test_a_missing_kind_of_dependencies_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="no started dependencies of type Deps"):
        service().dependencies(Deps)


def test_the_graph_client_is_refused_without_uses_graph() -> None:
    with pytest.raises(RuntimeError, match="Graph client used before start"):
        _ = service().graph_client
