"""The sandbox's schema comes from Meta's SDK: every route maps to an SDK-declared call, types are checked."""

from __future__ import annotations

import pytest

from services.graph_sandbox import schema
from services.graph_sandbox.config import SandboxConfig
from services.graph_sandbox.core import Sandbox
from services.graph_sandbox.objects import full_view
from services.graph_sandbox.routes import ROUTES


@pytest.mark.parametrize(("kind", "edge", "method"), sorted(ROUTES, key=lambda k: (k[0], k[1] or "", k[2])))
def test_every_sandbox_route_is_a_call_meta_declares(kind: str, edge: str | None, method: str) -> None:
    node_type = schema.for_kind(kind)
    assert node_type is not None, f"{kind} has no SDK class"
    assert node_type.endpoint(method, edge) is not None, f"{method} {node_type.name}/{edge or ''} is not in the SDK"


async def test_seeded_objects_only_carry_declared_fields() -> None:
    sb = Sandbox(SandboxConfig())
    for node in sb.state.nodes.values():
        declared = schema.for_kind(node.kind).fields
        assert set(full_view(sb, node)) <= set(declared), node.kind


def test_sdk_types_and_enums() -> None:
    adset = schema.node_type("AdSet")
    assert adset.fields["bid_amount"] == "unsigned int"
    assert adset.fields["daily_budget"] == "string"
    assert "ACTIVE" in adset.enums["Status"]
    assert not any(v.startswith("facebook_business") for v in adset.enums["Status"]), "no dunder entries"
    update = adset.endpoint("POST", None)
    assert update is not None
    assert update.params["daily_budget"] == "unsigned int"
    assert "LEAD_GENERATION" in update.enums["optimization_goal_enum"]


@pytest.mark.parametrize(
    ("declared", "value", "ok"),
    [
        ("unsigned int", "2500", True),
        ("unsigned int", 2500, True),
        ("unsigned int", "-1", False),
        ("int", "12.5", False),
        ("unsigned int", True, False),
        ("bool", "true", True),
        ("bool", "yes", False),
        ("string", "x", True),
        ("string", {"a": 1}, False),
        ("list<string>", '["a","b"]', True),
        ("list<string>", [{"event_name": "Lead"}], True),  # CAPI data: objects inside list<string>
        ("list<int>", "[1,2]", True),
        ("list<int>", '["a"]', False),
        ("Targeting", '{"geo_locations":{}}', True),
        ("Targeting", "US", False),
        ("Object", {"page_id": "1"}, True),
        ("status_enum", "PAUSED", True),
        ("status_enum", "RUNNING", False),
        ("list<status_enum>", "ACTIVE,PAUSED", True),
        ("list<status_enum>", '["ACTIVE","NOPE"]', False),
    ],
)
def test_type_problem(declared: str, value: object, ok: bool) -> None:
    enums = {"status_enum": frozenset({"ACTIVE", "PAUSED"})}
    assert (schema.type_problem(declared, value, enums) is None) is ok


def test_serialise_follows_declared_types() -> None:
    view = schema.serialise("adset", {"daily_budget": 2500, "bid_amount": "350", "is_dynamic_creative": True})
    assert view == {"daily_budget": "2500", "bid_amount": 350, "is_dynamic_creative": True}


def test_call_audit_flags_what_meta_would_refuse() -> None:
    from tests.fixtures.graph_audit import violations

    def sig(method: str, node_type: str, edge: str, fields: list[str], params: list[str], agent: str) -> dict:
        return {"agent": agent, "method": method, "node_type": node_type, "edge": edge, "fields": fields,
                "params": params, "count": 1}

    leadwire = "leadwire-graph/1"
    assert violations([
        sig("GET", "Ad", "", ["id", "status", "effective_status"], [], leadwire),
        sig("GET", "AdAccount", "adsets", ["daily_budget", "effective_status"], ["effective_status"], leadwire),
        sig("GET", "AdSet", "insights", ["spend"], ["date_preset"], leadwire),
        sig("POST", "AdSet", "", [], ["daily_budget"], leadwire),
        sig("GET", "Ad", "", ["daily_budget"], [], "Python/3.11 aiohttp/3.11"),  # a test's own call: not audited
    ]) == []
    assert violations([
        sig("GET", "Ad", "", ["id", "daily_budget"], [], leadwire),
        sig("GET", "AdAccount", "campaigns", ["bogus"], [], leadwire),
        sig("POST", "Campaign", "", [], ["daily_budget", "nonsense"], leadwire),
    ]) == [
        "GET Ad/: field 'daily_budget' does not exist on Ad",
        "GET AdAccount/campaigns: field 'bogus' does not exist on Campaign",
        "POST Campaign/: param 'nonsense' is not declared",
    ]


def test_leadwire_default_api_version_is_one_meta_still_serves() -> None:
    from services.graph_sandbox.core import Versions, version_key
    from shared.settings import MetaSettings

    default = MetaSettings.model_fields["api_version"].default
    versions = Versions()
    assert version_key(versions.oldest) <= version_key(default) <= version_key(versions.latest)
    assert versions.check(default, "ads_management") == {}
