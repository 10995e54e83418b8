"""Every Graph call the campaign executor makes asks only for what the node type has, per Meta's SDK.

The executor runs every command kind at every level it accepts against the Graph sandbox; the sandbox records
each call's signature (method, node type, edge, fields read, params sent). Those the executor made are checked
against the facebook-business SDK's declarations (`services/graph_sandbox/schema.py` loads them): every field read
exists on the node type (or, for an edge, on the listed type), every POST param is declared. An Ad has no budget:
reading `daily_budget` on one is Meta's #100.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.campaign_executor.worker import Worker
from services.graph_sandbox import schema
from shared.graph.client import USER_AGENT
from tests.fixtures.graph_audit import EDGE_NODE_TYPE, violations
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_executor_rechecks import command, worker  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(90)

Key = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]


async def signatures(sandbox: SandboxHandle) -> Counter[Key]:
    body = await sandbox.control("GET", f"calls/signatures?agent={USER_AGENT.split('/')[0]}")
    return Counter({(s["method"], s["node_type"], s["edge"], tuple(s["fields"]), tuple(s["params"])): s["count"]
                    for s in body["signatures"]})


def create_payload(sandbox: SandboxHandle, status: str) -> dict[str, Any]:
    page = sandbox.state["page_id"]
    return {
        "account_id": sandbox.account_id, "status": status,
        "campaign": {"name": f"Graph calls {status}", "objective": "OUTCOME_LEADS", "special_ad_categories": []},
        "ad_set": {"name": "Texas", "targeting": {"geo_locations": {"regions": [{"key": "4063"}]}},
                   "page_id": page, "budget": {"kind": "daily", "amount_minor": 2000},
                   "bid_strategy": "LOWEST_COST_WITHOUT_CAP"},
        "creative": {"name": "Injured?", "page_id": page, "lead_form_id": sandbox.state["form_ids"][0],
                     "image_url": "https://example.com/a.jpg", "message": "Free case review.",
                     "link": "https://example.com/review", "call_to_action": "APPLY_NOW"},
        "ad": {"name": "Ad A"},
    }


AUDIENCE_PAGE = "700100200399"  # this test's lead only


async def audience_to_sync(db: asyncpg.Pool, tmp_path: Path, account: str) -> tuple[str, str]:
    """An audiences file with one definition over one stored lead: (file, definition name)."""
    name = f"graph_calls_{uuid.uuid4().hex[:8]}"
    await db.execute("delete from leads where page_id = $1", AUDIENCE_PAGE)
    # The sandbox hands out the same audience ids after each reset: forget what earlier tests recorded.
    await db.execute("delete from audience_members where audience_id in "
                     "(select audience_id from audiences where account_id = $1)", account)
    await db.execute("delete from audiences where account_id = $1", account)
    await db.execute(
        "insert into leads (leadgen_id, page_id, created_time, fields, raw, source) "
        "values ($1, $2, $3, $4, '{}', 'webhook')", str(uuid.uuid4().int % 10**15 + 10**15), AUDIENCE_PAGE,
        datetime.now(UTC), {"email": "a@example.com", "phone_number": "+1 202 555 0100"})
    path = tmp_path / "audiences.yaml"
    path.write_text(f"audiences:\n  {name}:\n    account_id: {account}\n    page_ids: [\"{AUDIENCE_PAGE}\"]\n"
                    "    leads: {days: 30}\n", encoding="utf-8")
    return str(path), name


async def test_every_graph_call_of_the_executor_is_valid_for_its_node_type(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool, tmp_path: Path  # noqa: F811
) -> None:
    account = sandbox.state["accounts"][sandbox.account_id]
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    ad = account["ads"][0]
    cbo = account["campaigns"][1]  # the campaign with a campaign budget
    audiences_file, audience = await audience_to_sync(db, tmp_path, sandbox.account_id)
    worker.context = dataclasses.replace(worker.context, audiences_file=audiences_file)
    acct = {"account_id": sandbox.account_id}
    commands = [
        command("pause", object_id=ad, level="ad"),
        command("unpause", object_id=ad, level="ad", **acct),
        command("pause", object_id=ad, level="ad", dry_run=True),
        command("pause", object_id=adset, level="adset"),
        command("unpause", object_id=adset, level="adset"),
        command("change_budget", object_id=adset, level="adset", percent=10, **acct),
        command("change_budget", object_id=adset, level="adset", percent=-5),
        command("set_budget", object_id=cbo, level="campaign", amount_minor=999_999, dry_run=True),
        command("change_budget", object_id=cbo, level="campaign", percent=5),
        command("pause", object_id=cbo, level="campaign"),
        command("unpause", object_id=cbo, level="campaign"),
        command("archive", object_id=ad, level="ad"),
        command("delete", object_id=ad, level="ad"),
        command("create_campaign", **create_payload(sandbox, "PAUSED")),
        command("create_campaign", **create_payload(sandbox, "ACTIVE")),
        command("sync_audience", audience=audience),
    ]
    before = await signatures(sandbox)
    outcomes = []
    for message in commands:
        result = await worker.execute(message)
        assert result is not None
        outcomes.append((result.kind, result.status, result.detail))
    made = await signatures(sandbox) - before

    assert not [o for o in outcomes if o[1] == "failed"], outcomes  # Meta refused nothing the executor asked
    assert {o[1] for o in outcomes} >= {"ok", "dry_run"}
    listed = [{"agent": USER_AGENT, "method": m, "node_type": n, "edge": e, "fields": list(f), "params": list(p)}
              for (m, n, e, f, p) in made]
    assert not violations(listed), violations(listed)
    # The same, spelled out against the SDK's field lists: every field read exists on what is read.
    node_types = set()
    for method, node_type, edge, fields, _params in made:
        read = node_type if not edge else EDGE_NODE_TYPE.get(edge) or schema.node_type(node_type).endpoint(
            method, edge).target
        declared = schema.node_type(read)
        node_types.add(read)
        for field in fields:
            assert declared.readable(field), f"{method} {node_type}/{edge}: {field} is not a field of {read}"
    # What was exercised: reads of ads, ad sets, campaigns, accounts and audiences, insights, the batch's creates.
    assert {"Ad", "AdSet", "Campaign", "AdAccount", "CustomAudience", "AdsInsights"} <= node_types
    ad_reads = [fields for (method, node_type, edge, fields, _p) in made
                if (method, node_type, edge) == ("GET", "Ad", "")]
    assert ad_reads, "the ad's commands read the ad"
    assert all("daily_budget" not in fields and "status" in fields for fields in ad_reads)
