"""The registry: every service once, each on its own port under `leadwire run`, the ingress on INGRESS_PORT."""

from __future__ import annotations

import pytest

from services.console.settings import ConsoleSettings
from services.ingress.settings import IngressSettings
from services.registry import SERVICES
from shared.cli import build_services
from shared.service import Port
from shared.settings import OpsSettings, Settings, SettingsError
from shared.topology import CONSUMERS


def ports(
    *, base: int | None = None, ops_port: int | None = None, ingress_port: int = 8080, console_port: int = 8087
) -> dict[str, Port]:
    ops = OpsSettings(ops_port=ops_port) if base is None else OpsSettings(ops_port_base=base, ops_port=ops_port)
    settings = Settings(ops=ops, ingress=IngressSettings(ingress_port=ingress_port),
                        console=ConsoleSettings(port=console_port))
    return {service.name: service.port for service in build_services(SERVICES, settings)}


def test_every_service_is_registered_once_under_the_name_its_app_carries() -> None:
    names = [spec.name for spec in SERVICES]
    assert len(names) == len(set(names))
    assert {c.service for c in CONSUMERS} <= set(names)  # every consumer's service can be run
    assert list(ports()) == names  # create_app builds the service the registry names


def test_run_all_defaults_to_the_documented_ports() -> None:
    assert {name: port.number for name, port in ports().items()} == {
        "ingress": 8080, "lead_fetcher": 8081, "crm_sync": 8082, "capi_sender": 8083,
        "insights_poller": 8084, "rules_engine": 8085, "campaign_executor": 8086, "console": 8087, "reports": 8088,
    }


def test_two_copies_with_different_bases_use_distinct_ports() -> None:
    first = [port.number for port in ports(base=8081, ingress_port=8080).values()]
    second = [port.number for port in ports(base=9081, ingress_port=9080, console_port=9087).values()]
    assert len(set(first)) == len(first)
    assert len(set(second)) == len(second)
    assert not set(first) & set(second)


def test_ingress_port_stays_authoritative_whatever_the_ops_variables_say() -> None:
    assert ports(base=9081, ingress_port=8080)["ingress"] == Port(8080, "INGRESS_PORT")
    assert ports(base=9081, ingress_port=8080)["crm_sync"] == Port(9082, "OPS_PORT_BASE")
    settings = Settings(ops=OpsSettings(ops_port=9999), ingress=IngressSettings(ingress_port=8080))
    [ingress] = build_services([SERVICES[0]], settings)
    assert ingress.port == Port(8080, "INGRESS_PORT")


def test_ops_port_is_for_one_service_alone() -> None:
    settings = Settings(ops=OpsSettings(ops_port=9999))
    [crm_sync] = build_services([spec for spec in SERVICES if spec.name == "crm_sync"], settings)
    assert crm_sync.port == Port(9999, "OPS_PORT")
    with pytest.raises(SettingsError, match=r"^OPS_PORT=9999 would serve lead_fetcher, crm_sync.* on one port"):
        build_services(SERVICES, settings)
    assert len(ports(ops_port=0)) == len(SERVICES)  # 0: each picks a free port, no clash
