"""The console's Automation page over plain HTTP against the real PostgreSQL: every rule run and decision with its
numbers and sentence, filters, and the operator's consent and verdicts sent to the rules engine as messages (the
console writes none of the rules engine's tables)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from contracts.messages import RuleConsentChangedMessage, RuleDecisionReviewedMessage
from tests.fixtures.console import Console, csrf_of
from tests.fixtures.infra import unique

pytestmark = pytest.mark.timeout(60)


async def seed_decisions(db: asyncpg.Pool) -> dict[str, object]:
    """One run with a shadow decision, a held one, an acted one that Meta applied and one it refused, and the
    notification of a notify-only rule (it changes nothing on Meta)."""
    await db.execute("truncate rule_decision_reviews, rule_actions, rule_decisions, rule_runs, rule_consent cascade")
    kill, scale, flag = unique("kill-"), unique("scale-"), unique("flag-")
    run_id = uuid.uuid4()
    now = datetime.now(UTC) - timedelta(minutes=5)
    await db.execute(
        "insert into rule_runs (run_id, trigger, accounts, started_at, rules, notify_only, entities, decisions, "
        "acted, counts) values ($1, 'insights_updated', '{act_1}', $2, $3, $4, 40, 5, 3, $5)",
        run_id, now, [kill, scale, flag], [flag], {"acted": 3, "would_act": 1, "skipped:cooldown": 1})
    rows = [
        (kill, "111", "Phoenix Broad", "would_act", None, True,
         {"last_3_days": {"spend": 75_000, "leads": 0, "cpl": None}},
         "Would pause ad set 'Phoenix Broad' because spend over the last 3 days was $750.00 (≥ $100)."),
        (kill, "222", "Tucson Lookalike", "skipped", "cooldown", False, {"last_3_days": {"cpl": 6_240}},
         "Did not pause ad set 'Tucson Lookalike' (cooldown: this rule acted on it 2.0 h ago) although CPL ..."),
        (scale, "333", "Mesa Winners", "acted", None, False, {"last_3_days": {"cpl": 2_000, "leads": 9}},
         "Raised the daily budget of ad set 'Mesa Winners' from $100.00 to $120.00 (+20%) because CPL ..."),
        (scale, "444", "Chandler Interests", "acted", None, False, {"last_3_days": {"cpl": 1_900, "leads": 7}},
         "Raised the daily budget of ad set 'Chandler Interests' from $100.00 to $120.00 (+20%) because CPL ..."),
        (flag, "555", "Gilbert Retargeting", "acted", None, False, {"last_3_days": {"cpl": 7_100}},
         "Flagged ad set 'Gilbert Retargeting' because CPL over the last 3 days was $71.00 (> $50.00)."),
    ]
    ids = {}
    for rule, entity, name, outcome, reason, shadow, metrics, explanation in rows:
        ids[entity] = await db.fetchval(
            "insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, "
            "account_id, currency, outcome, reason, shadow, metrics, explanation) values ($1, $2, $3, $4, 'adset', "
            "$5, 'act_1', 'USD', $6, $7, $8, $9, $10) returning id",
            run_id, now, rule, entity, name, outcome, reason, shadow, metrics, explanation)
    for entity, status, guardrail, detail in (("333", "ok", None, "daily budget 10000 -> 12000"),
                                              ("444", "refused", "hard_max_budget", "above 2x the first-seen $50")):
        await db.execute(
            "insert into rule_actions (command_id, run_id, rule, entity_id, entity_level, account_id, kind, "
            "acted_at, message_id, result_status, result_detail, result_guardrail) "
            "values ($1, $2, $3, $4, 'adset', 'act_1', 'set_budget', $5, $6, $7, $8, $9)",
            uuid.uuid4(), run_id, scale, entity, now, uuid.uuid4(), status, detail, guardrail)
    await db.execute(  # a notify action stands for the notification (sent at once)
        "insert into rule_actions (command_id, run_id, rule, entity_id, entity_level, account_id, kind, acted_at, "
        "message_id) values ($1, $2, $3, '555', 'adset', 'act_1', 'notify', $4, $5)",
        uuid.uuid4(), run_id, flag, now, uuid.uuid4())
    return {"kill": kill, "scale": scale, "flag": flag, "ids": ids}


async def test_the_page_shows_every_decision_with_its_numbers_and_outcome(console: Console,
                                                                          console_db: asyncpg.Pool) -> None:
    seeded = await seed_decisions(console_db)
    status, _, resp = await console.get("/automation")
    assert status == 303
    assert resp.headers["Location"].startswith("/login")
    await console.login()

    status, page, _ = await console.get("/automation")
    assert status == 200
    assert "Would pause ad set &#39;Phoenix Broad&#39; because spend over the last 3 days was $750.00" in page
    assert "last 3 days: CPL — · leads 0 · spend 750.00 USD" in page  # (jsonb keeps its keys in its own order)
    assert 'data-status="shadow"' in page
    assert "Would act (shadow mode)" in page
    assert 'data-status="held"' in page
    assert "cooldown" in page
    assert 'data-status="acted"' in page
    assert "Meta / executor: daily budget 10000 -&gt; 12000" in page
    assert 'data-status="failed"' in page
    assert "refused by hard_max_budget" in page
    assert page.count('aria-label="Approve decision') == 1  # only the open shadow decision
    assert f'aria-label="Enable {seeded["kill"]}"' in page  # every rule starts in shadow mode
    assert f'aria-label="Enable {seeded["scale"]}"' in page

    # A notify-only rule is on without consent: no Enable; its decision told the operator, nothing else.
    assert f'aria-label="Enable {seeded["flag"]}"' not in page
    assert f'action="/automation/rules/{seeded["flag"]}/consent"' not in page
    assert rule_state(page, seeded["flag"]) == "On — notifies only (needs no consent)"
    assert rule_state(page, seeded["kill"]) == "Shadow mode"
    assert decision_status(page, "555") == "Notified you (nothing changed on Meta)"
    assert decision_status(page, "333") == "Done"
    assert decision_status(page, "111") == "Would act (shadow mode)"

    _, only_failed, _ = await console.get("/automation?status=failed")
    assert "Chandler Interests" in only_failed
    assert "Mesa Winners" not in only_failed
    _, by_object, _ = await console.get("/automation?object=tucson")
    assert "Tucson Lookalike" in by_object
    assert "Phoenix Broad" not in by_object
    _, by_rule, _ = await console.get(f"/automation?rule={seeded['scale']}")
    assert "Mesa Winners" in by_rule
    assert "Phoenix Broad" not in by_rule
    _, rows, _ = await console.get(f"/automation?rule={seeded['kill']}",
                                   headers={"HX-Request": "true", "HX-Target": "decision-rows"})
    assert rows.startswith('<div id="decision-rows">')
    assert "<html" not in rows


async def test_enable_and_approve_are_messages_to_the_rules_engine(console: Console,
                                                                   console_db: asyncpg.Pool) -> None:
    seeded = await seed_decisions(console_db)
    await console.login()
    _, page, _ = await console.get("/automation")
    token = csrf_of(page)
    kill = seeded["kill"]

    status, _, _ = await console.post(f"/automation/rules/{kill}/consent", {"enabled": "true"})
    assert status == 403  # no CSRF token
    status, _, resp = await console.post(f"/automation/rules/{kill}/consent", {"enabled": "true", "csrf_token": token})
    assert status == 303
    assert resp.headers["Location"] == "/automation?notice=enabled"
    [body] = await console_db.fetch("select body from outbox where message_type = 'RuleConsentChanged'")
    message = RuleConsentChangedMessage.model_validate(_json(body["body"]))
    assert (message.payload.rule, message.payload.enabled, message.payload.by) == (kill, True, "alice")
    # The console asked; the rules engine (not running here) is the one that records consent.
    assert await console_db.fetchval("select count(*) from rule_consent") == 0
    assert await console_db.fetchval("select count(*) from console_audit where action = 'rule_enable' "
                                     "and subject = $1 and username = 'alice'", kill) == 1

    ids = seeded["ids"]
    assert isinstance(ids, dict)
    status, _, resp = await console.post(f"/automation/decisions/{ids['111']}/review",
                                         {"verdict": "approve", "csrf_token": token})
    assert (status, resp.headers["Location"]) == (303, "/automation?notice=approved")
    [body] = await console_db.fetch("select body from outbox where message_type = 'RuleDecisionReviewed'")
    review = RuleDecisionReviewedMessage.model_validate(_json(body["body"]))
    assert (review.payload.decision_id, review.payload.verdict, review.payload.by) == (ids["111"], "approve", "alice")
    # Only an open shadow decision can be reviewed: an acted one sends nothing.
    status, _, resp = await console.post(f"/automation/decisions/{ids['333']}/review",
                                         {"verdict": "approve", "csrf_token": token})
    assert resp.headers["Location"] == "/automation?notice=not-reviewable"
    assert await console_db.fetchval("select count(*) from outbox where message_type = 'RuleDecisionReviewed'") == 1
    status, _, _ = await console.post(f"/automation/decisions/{ids['111']}/review",
                                      {"verdict": "delete", "csrf_token": token})
    assert status == 400


async def test_a_notify_only_rule_takes_no_consent(console: Console, console_db: asyncpg.Pool) -> None:
    seeded = await seed_decisions(console_db)
    await console.login()
    _, page, _ = await console.get("/automation")
    token = csrf_of(page)
    flag = seeded["flag"]

    for enabled in ("true", "false"):
        status, _, resp = await console.post(f"/automation/rules/{flag}/consent",
                                             {"enabled": enabled, "csrf_token": token})
        assert (status, resp.headers["Location"]) == (303, "/automation?notice=notify-only")
    assert await console_db.fetchval("select count(*) from outbox where message_type = 'RuleConsentChanged'") == 0
    assert await console_db.fetchval("select count(*) from console_audit where subject = $1", flag) == 0
    _, refused, _ = await console.get("/automation?notice=notify-only")
    assert "that rule only notifies you and changes nothing on Meta, so it needs no consent" in refused
    # An acting rule of the same run still takes it.
    status, _, resp = await console.post(f"/automation/rules/{seeded['scale']}/consent",
                                         {"enabled": "true", "csrf_token": token})
    assert (status, resp.headers["Location"]) == (303, "/automation?notice=enabled")


def rule_state(page: str, rule: object) -> str:
    """The State cell of a rule's row, its words only."""
    row = page.split(f'<tr data-rule="{rule}">', 1)[1].split("</tr>", 1)[0]
    return _words(row.split('data-testid="rule-state">', 1)[1].split("</td>", 1)[0])


def decision_status(page: str, entity: str) -> str:
    """The outcome label of the decision on ``entity``."""
    row = page.split(f'data-entity="{entity}">', 1)[1].split("</tr>", 1)[0]
    return _words(row.split('data-testid="decision-status"><span', 1)[1].split(">", 1)[1].split("</span>", 1)[0])


def _words(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value
