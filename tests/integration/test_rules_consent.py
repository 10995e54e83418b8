"""Consent and announcements end to end: the rules engine and the campaign executor against the Graph sandbox
(issue 15: a fresh install writes nothing to Meta until a rule is enabled; a failed pause announces a failure,
not a pause; 3 days x $250 with no lead pauses; the JPY account is judged in JPY).

Commands are watched on a test queue bound to `campaign.command`; what Meta was asked, in the sandbox's call log;
notifications on a local fake Slack webhook.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from contracts.messages import RuleConsentChangedMessage, RuleDecisionReviewedMessage
from contracts.rules import RuleConsentChanged, RuleDecisionReviewed
from services.rules_engine.cli import request_consent, request_review, status_text
from services.rules_engine.rules import DEFAULT_RULES_DIR
from shared.messaging import publish
from shared.settings import Settings
from tests.fixtures.guide_rules import GUIDE_FILES
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_campaign_executor import results, start_executor  # noqa: F401
from tests.integration.test_rules_engine import (  # noqa: F401
    MAIN,
    CommandWatch,
    FakeSlack,
    _true,
    clean,
    commands,
    consent,
    decisions_of,
    refresh_sandbox,
    run_of,
    seed_world,
    slack,
    start_service,
    trigger,
)

pytestmark = pytest.mark.timeout(120)


async def writes(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    """Every request that could change something at Meta (anything but a read)."""
    return [r for r in (await sandbox.calls())["requests"] if r["method"] != "GET"]


async def adset_ids(db: asyncpg.Pool, account: str) -> dict[str, str]:
    return {r["name"]: r["adset_id"] for r in await db.fetch("select adset_id, name from adsets where account_id = $1",
                                                            account)}


async def status_at_meta(sandbox: SandboxHandle, object_id: str) -> str:
    status, _, body = await sandbox.graph("GET", object_id, fields="status")
    assert status == 200, body
    return str(body["status"])


async def test_a_fresh_install_writes_nothing_to_meta_until_an_operator_enables_a_rule(
    db: asyncpg.Pool, sandbox: SandboxHandle, broker: RabbitBroker, clean: None, commands: CommandWatch,  # noqa: F811
    start_service: Any, start_executor: Any, slack: FakeSlack,  # noqa: F811
) -> None:
    await sandbox.set_clock("23:00")  # late enough for the burner's today to pass $300
    await refresh_sandbox(db, sandbox)
    names = await adset_ids(db, MAIN)
    burner = names["Prospecting - Advantage+"]
    await start_executor()
    await sandbox.reset_calls()

    # A new install: every default rule in shadow mode. The poller's InsightsUpdated is evaluated...
    await start_service(slack_url=slack.url, accounts=[MAIN])
    first = await run_of(db, await trigger(broker, MAIN))
    shadow = [d for d in await decisions_of(db, first["run_id"]) if d["outcome"] == "would_act"]
    assert shadow
    assert all(d["shadow"] for d in shadow)
    assert first["acted"] == 0
    would = next(d for d in shadow if d["entity_id"] == burner)
    assert would["explanation"].startswith("Would pause ad set 'Prospecting - Advantage+' because")
    # ... announced as "would", once per rule and ad set however many runs see it ...
    await eventually(lambda: _true(any(t.startswith("[info] Would pause ad set 'Prospecting - Advantage+'")
                                       for t in slack.texts)), what="shadow announcement")
    second = await run_of(db, await trigger(broker, MAIN))
    assert second["acted"] == 0
    assert await db.fetchval("select count(*) from rule_decisions where entity_id = $1 and rule = $2 and announced",
                             burner, would["rule"]) == 1
    # ... and nothing reached the executor or Meta.
    assert await commands.for_objects(list(names.values())) == []
    assert await writes(sandbox) == []
    assert await status_at_meta(sandbox, burner) == "ACTIVE"

    # The operator enables one rule (the message the CLI and the console send).
    since = await db.fetchval("select now()")
    await publish(broker, RuleConsentChangedMessage.new(RuleConsentChanged(rule=would["rule"], enabled=True,
                                                                           by="alice", note="checked the numbers")))
    await eventually(lambda: db.fetchval("select enabled from rule_consent where rule = $1", would["rule"]),
                     what="consent applied")
    await eventually(lambda: _true(any(f"Rule '{would['rule']}' enabled by alice" in t for t in slack.texts)),
                     what="consent announced")
    # Enabling evaluates at once: the rule acts without waiting for new numbers or the schedule.
    third = await eventually(lambda: db.fetchrow("select * from rule_runs where trigger = 'consent' and acted > 0 "
                                                 "and $1 = any(accounts) and started_at > $2", MAIN, since),
                             what="the evaluation after the consent")
    sent = await eventually(lambda: commands.for_objects([burner]), what="the enabled rule's pause")
    assert [c["kind"] for c in sent] == ["pause"]
    assert {c["requested_by"] for c in await commands.for_objects(list(names.values()))} == {
        f"rules_engine:{would['rule']}"}, "only the enabled rule acts"
    await eventually(lambda: _true(any(t.startswith("[warning] Paused ad set 'Prospecting - Advantage+' because")
                                       for t in slack.texts)), timeout=20, what="announced once paused")
    assert await status_at_meta(sandbox, burner) == "PAUSED"
    assert [w["path"] for w in await writes(sandbox)]
    assert all(burner in w["path"] or w.get("batch")
                                                              for w in await writes(sandbox))

    # Approving one shadow decision of another rule applies it, through the same guardrails.
    other = await db.fetchrow(
        "select id, entity_id, rule from rule_decisions where run_id = $1 and shadow and entity_id <> $2 "
        "and account_id = $3 order by id limit 1", third["run_id"], burner, MAIN)
    assert other is not None, "another rule still in shadow mode"
    await publish(broker, RuleDecisionReviewedMessage.new(RuleDecisionReviewed(decision_id=other["id"],
                                                                               verdict="approve", by="alice")))
    review = await eventually(lambda: db.fetchrow("select * from rule_decision_reviews where decision_id = $1",
                                                  other["id"]), what="approval applied")
    assert review["result"].startswith("applied: "), review["result"]
    action = await db.fetchrow("select command_id, rule from rule_actions where run_id = $1 and kind <> 'notify'",
                               review["result_run_id"])
    assert (action["rule"], review["verdict"]) == (other["rule"], "approve")
    sent = await eventually(lambda: commands.for_objects([other["entity_id"]]), timeout=30,
                            what="the approved decision's command")
    assert [c["command_id"] for c in sent] == [str(action["command_id"])]
    assert not await db.fetchval("select enabled from rule_consent where rule = $1", other["rule"])


async def test_a_failed_pause_announces_the_failure_not_a_pause(
    db: asyncpg.Pool, sandbox: SandboxHandle, broker: RabbitBroker, clean: None, commands: CommandWatch,  # noqa: F811
    start_service: Any, start_executor: Any, slack: FakeSlack,  # noqa: F811
) -> None:
    await sandbox.set_clock("23:00")
    await refresh_sandbox(db, sandbox)
    burner = (await adset_ids(db, MAIN))["Prospecting - Advantage+"]
    await start_executor()
    await sandbox.faults(error_rate=1.0, path_regex=rf"/{burner}$", error_status=400, error={
        "message": "(#100) Invalid parameter", "code": 100, "is_transient": False, "type": "OAuthException"})
    await consent(db, "budget-protection")
    await start_service(write_rules_dir_with(Path(__file__), "40_budget_protection.yaml"), slack_url=slack.url)

    await run_of(db, await trigger(broker, MAIN))
    await eventually(lambda: commands.for_objects([burner]), what="the pause command")
    failure = await eventually(lambda: _first(slack.texts, "Could not pause ad set 'Prospecting - Advantage+'"),
                               timeout=20, what="the failure announced")
    assert "Meta answered #100" in failure
    assert "It was tried because spend today was $" in failure
    assert not any("Paused ad set 'Prospecting - Advantage+'" in t for t in slack.texts)
    row = await db.fetchrow("select result_status, announced_at from rule_actions where entity_id = $1 "
                            "and kind = 'pause'", burner)
    assert row["result_status"] == "failed"
    assert row["announced_at"] is not None
    await sandbox.faults(error_rate=0.0, path_regex=None)


def write_rules_dir_with(_: Path, *files: str) -> Path:
    """A rules directory holding only these default rule files (a temporary copy), the guide's CPL rules
    (kill-underperformers, scale-winners: shipped disabled) switched on."""
    from tests.fixtures.guide_rules import write_guide_rules_dir

    return write_guide_rules_dir(files=files)


async def _first(texts: list[str], needle: str) -> str | None:
    return next((t for t in texts if needle in t), None)


async def test_three_days_of_250_dollars_without_a_lead_pause(
    db: asyncpg.Pool, broker: RabbitBroker, clean: None, commands: CommandWatch,  # noqa: F811
    start_service: Any,  # noqa: F811
) -> None:
    world = await seed_world(db, {"No leads": (30_000, [(25_000, 6_000, 4_000, 0)] * 3),
                                  "Leads": (30_000, [(25_000, 6_000, 4_000, 8)] * 3)})
    await consent(db, "zero-leads", "kill-underperformers", "budget-protection")
    await start_service(write_rules_dir_with(Path(__file__), *GUIDE_FILES))
    run = await run_of(db, await trigger(broker, world.account))
    acted = [(d["rule"], d["entity_id"]) for d in await decisions_of(db, run["run_id"]) if d["outcome"] == "acted"]
    assert acted == [("zero-leads", world.adsets["No leads"])]
    sent = await eventually(lambda: commands.for_objects(list(world.adsets.values())), what="the pause")
    assert [(c["kind"], c["object_id"]) for c in sent] == [("pause", world.adsets["No leads"])]
    assert sent[0]["reason"] == ("Paused ad set 'No leads' because spend over the last 7 days was $750.00 (≥ $400) "
                                 "and leads over the last 7 days were 0 (= 0).")


async def test_the_jpy_account_is_judged_in_jpy(
    db: asyncpg.Pool, broker: RabbitBroker, clean: None, commands: CommandWatch,  # noqa: F811
    start_service: Any,  # noqa: F811
) -> None:
    # The yen account: a $16 CPL winner (2,383 JPY a lead) on an 8,000 JPY daily budget.
    world = await seed_world(db, {"Tokyo - Broad": (8_000, [(16_683, 5_000, 4_000, 7)] * 3)}, tz="Asia/Tokyo")
    await db.execute("update ad_accounts set currency = 'JPY', currency_offset = 1 where account_id = $1",
                     world.account)
    await db.execute("update insights_daily set currency = 'JPY' where account_id = $1", world.account)
    tokyo = world.adsets["Tokyo - Broad"]
    await consent(db, "kill-underperformers", "scale-winners", "zero-leads")

    # No rate: the USD rules do not judge the yen account at all (never "CPL 2,383 JPY (> 50 JPY)").
    guide = write_rules_dir_with(Path(__file__), *GUIDE_FILES)
    service = await start_service(guide)
    run = await run_of(db, await trigger(broker, world.account))
    assert await decisions_of(db, run["run_id"]) == []
    await start_service.stop(service)

    # At 150 yen to the dollar: $50 is 7,500 JPY, $25 is 3,750 JPY; the winner is scaled, in yen.
    await start_service(guide, currency_rates=["USD/JPY=150"])
    run = await run_of(db, await trigger(broker, world.account))
    decisions = {d["rule"]: d for d in await decisions_of(db, run["run_id"]) if d["entity_id"] == tokyo}
    assert set(decisions) == {"scale-winners"}
    scale = decisions["scale-winners"]
    assert scale["outcome"] == "acted"
    assert scale["currency"] == "JPY"
    assert "CPL over the last 3 days was 2,383 JPY (< 3,750 JPY)" in scale["explanation"]
    assert "$" not in scale["explanation"]
    [command] = await eventually(lambda: commands.for_objects([tokyo]), what="the raise")
    assert command["kind"] == "set_budget"
    assert command["amount_minor"] == 9_600




async def test_the_command_line_sends_consent_and_verdicts_and_shows_the_state(
    db: asyncpg.Pool, broker: RabbitBroker, clean: None, commands: CommandWatch,  # noqa: F811
    start_service: Any, settings: Settings,  # noqa: F811
) -> None:
    world = await seed_world(db, {"No leads": (30_000, [(25_000, 6_000, 4_000, 0)] * 3)})
    await start_service(accounts=[world.account])  # other tests' accounts stay in the database
    before = await status_text(settings, DEFAULT_RULES_DIR)
    assert re.search(r"zero-leads +shadow mode", before), before
    # a notify-only rule is never in shadow mode: it changes nothing on the account
    assert re.search(r"refresh-reminder +on: notifies only, needs no consent", before), before

    run = await run_of(db, await trigger(broker, world.account))
    [shadow] = [d for d in await decisions_of(db, run["run_id"]) if d["rule"] == "zero-leads"]
    assert shadow["shadow"]
    decision, result = await request_review(settings, shadow["id"], verdict="reject", by="cli:tester")
    assert decision is not None
    assert decision.startswith("Would pause ad set 'No leads'")
    assert result == "rejected: nothing was sent"
    assert await request_review(settings, 2**62, verdict="approve", by="cli:tester") == (None, None)

    assert await request_consent(settings, "zero-leads", enabled=True, by="cli:tester", note="seen enough") is True
    after = await status_text(settings, DEFAULT_RULES_DIR)
    assert re.search(r"zero-leads +ENABLED by cli:tester", after), after
    sent = await eventually(lambda: commands.for_objects([world.adsets["No leads"]]), what="the enabled rule acts")
    assert [c["kind"] for c in sent] == ["pause"]
    assert await request_consent(settings, "zero-leads", enabled=False, by="cli:tester") is False
    assert await db.fetchval("select count(*) from rule_consent_log where rule = 'zero-leads' "
                             "and changed_by = 'cli:tester'") == 2
