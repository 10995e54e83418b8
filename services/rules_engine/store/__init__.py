"""PostgreSQL side of the rules engine: the snapshot the rules read (`store/snapshot.py`), engine state, audit, CRM
outcomes, breakers, deliveries (migrations 0004, 0008, 0009).

Tables: this module writes and reads only the rules engine's own tables (`rule_*`, `notification_deliveries`,
`incident_alerts`). What other services own it reads through their read models, never their tables
(services/README.md "Tables have owners"): insights_poller's `stored_ad_accounts`, `stored_campaigns`,
`stored_adsets`, `stored_ads`, `stored_insights_daily`, `stored_window_reach` (migration 0031), lead_fetcher's
`stored_leads` (0030, 0050) and campaign_executor's `stored_budget_limits` (0100). Plain views: PostgreSQL inlines
them, so the plans are those of the tables behind them.

Snapshot: only what the enabled rules need is read (`snapshot.py`): the levels they act on and the days their
longest window covers (capped by RULES_LOOKBACK_DAYS). Insights are summed per ad set and window segment in SQL
unless a rule works at ad level, which cuts the rows Python has to handle by the number of ads per ad set.

Reach: `stored_insights_daily` holds each day's reach only, and the sum of daily reach overstates unique reach (a person
reached on two days counts twice), which understates frequency. The insights poller also stores Meta's
deduplicated reach per ad, ad set and campaign over whole windows (`stored_window_reach`); it goes into
`Snapshot.window_reach` for a window the rules use only while the stored range is that window's range as of the
evaluation's `now` in the account's time zone. Otherwise (windows not read, a range read before midnight)
the rules fall back to summed daily reach.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from services.rules_engine.model import (
    ActionRecord,
    BudgetLimit,
    Decision,
    EngineState,
    norm_account,
)
from services.rules_engine.rules import Rule
from services.rules_engine.store.snapshot import load_snapshot as load_snapshot
from services.rules_engine.store.snapshot import load_window_reach as load_window_reach
from shared.budget_guardrails import daily_ceiling_minor, max_daily_budget

logger = logging.getLogger(__name__)

# History kept in the engine state: longer than any sensible cooldown, and the backtest's default.
HISTORY = timedelta(days=8)


async def lock_evaluation(conn: asyncpg.Connection) -> None:
    """One evaluation at a time (all processes): two runs must not both see "no cooldown" and both act."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('rules_engine:evaluate'))")


async def known_accounts(conn: asyncpg.Connection, only: Sequence[str] = ()) -> list[str]:
    rows = await conn.fetch(
        "select account_id from stored_ad_accounts where cardinality($1::text[]) = 0 or account_id = any($1::text[]) "
        "order by account_id",
        list(only),
    )
    return [r["account_id"] for r in rows]


async def load_state(
    conn: asyncpg.Connection, accounts: Sequence[str], now: datetime, *, ceiling_major: float | None,
    first_seen_multiple: float | None = None, history: timedelta = HISTORY,
    account_ceilings: Mapping[str, float] | None = None,
) -> EngineState:
    """Action history (every account: per-rule daily caps span accounts), breakers, freshness, ceilings and the
    executor's hard budget limits (`stored_budget_limits`).

    An account's ceiling is its own (``account_ceilings``, major units: LEADWIRE_ACCOUNTS_FILE) when set, else
    BUDGET_DAILY_CEILING when set, else (as the executor derives it) ``first_seen_multiple`` times its active daily
    total when leadwire first saw it."""
    own = {norm_account(k): v for k, v in (account_ceilings or {}).items()}
    actions = [
        ActionRecord(rule=r["rule"], entity_id=r["entity_id"], kind=r["kind"], at=r["acted_at"],
                     resume_at=r["resume_at"])
        for r in await conn.fetch(
            "select rule, entity_id, kind, acted_at, resume_at from rule_actions where acted_at > $1 "
            "order by acted_at",
            now - history,
        )
    ]
    failures = {r["rule"]: r["failures"] for r in await conn.fetch("select rule, failures from rule_breakers")}
    data_as_of: dict[str, datetime] = {}
    ceilings: dict[str, int] = {}
    for r in await conn.fetch(
        "select account_id, currency, last_refresh_at from stored_ad_accounts where account_id = any($1::text[])",
        list(accounts),
    ):
        if r["last_refresh_at"] is not None:
            data_as_of[r["account_id"]] = r["last_refresh_at"]
        ceiling = daily_ceiling_minor(own.get(norm_account(r["account_id"]), ceiling_major), r["currency"])
        if ceiling is not None:
            ceilings[r["account_id"]] = ceiling
    limits: dict[str, BudgetLimit] = {}
    for r in await conn.fetch(
        "select key, scope, first_seen_daily_minor, increases_week, blocked_until from stored_budget_limits"
    ):
        if r["scope"] == "account":
            if ceiling_major is None and first_seen_multiple is not None and norm_account(r["key"]) not in own:
                ceilings[r["key"]] = max_daily_budget(r["first_seen_daily_minor"], first_seen_multiple)
        else:
            limits[r["key"]] = BudgetLimit(r["first_seen_daily_minor"], r["increases_week"], r["blocked_until"])
    return EngineState(actions=tuple(actions), consecutive_failures=failures,
                       account_daily_budget_ceiling=ceilings, data_as_of=data_as_of,
                       consented=await consented_rules(conn), budget_limits=limits,
                       retired_ads=await retired_ads(conn))


async def retired_ads(conn: asyncpg.Connection) -> frozenset[str]:
    """Ads creative rotation took out of delivery (its command not refused or failed): never reserves again."""
    rows = await conn.fetch("select distinct entity_id from rule_actions where kind = 'rotate_creative' "
                            "and (result_status is null or result_status = 'ok')")
    return frozenset(r["entity_id"] for r in rows)


# ---------------------------------------------------------------------------------------------------------------
# Consent and reviews (migration 0060)


async def consented_rules(conn: asyncpg.Connection) -> frozenset[str]:
    """The rules an operator enabled; every other rule runs in shadow mode."""
    return frozenset(r["rule"] for r in await conn.fetch("select rule from rule_consent where enabled"))


async def set_consent(
    conn: asyncpg.Connection, *, rule: str, enabled: bool, by: str, note: str, at: datetime, message_id: uuid.UUID
) -> bool | None:
    """Record a consent change; returns the state before (None: never set, i.e. shadow mode)."""
    before: bool | None = await conn.fetchval("select enabled from rule_consent where rule = $1 for update", rule)
    await conn.execute(
        """
        insert into rule_consent (rule, enabled, changed_by, note, changed_at, message_id)
        values ($1, $2, $3, $4, $5, $6)
        on conflict (rule) do update set enabled = excluded.enabled, changed_by = excluded.changed_by,
            note = excluded.note, changed_at = excluded.changed_at, message_id = excluded.message_id
        """,
        rule, enabled, by, note, at, message_id,
    )
    await conn.execute(
        "insert into rule_consent_log (rule, enabled, changed_by, note, changed_at, message_id) "
        "values ($1, $2, $3, $4, $5, $6) on conflict (message_id) do nothing",
        rule, enabled, by, note, at, message_id,
    )
    return before


async def consent_rows(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    return {r["rule"]: r for r in await conn.fetch("select * from rule_consent order by rule")}


async def consent_applied(conn: asyncpg.Connection, message_id: uuid.UUID) -> bool | None:
    """The state a RuleConsentChanged (by its message id) recorded; None while the engine has not applied it."""
    enabled: bool | None = await conn.fetchval("select enabled from rule_consent where message_id = $1", message_id)
    return enabled


async def decision(conn: asyncpg.Connection, decision_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from rule_decisions where id = $1", decision_id)


async def recent_decision_counts(conn: asyncpg.Connection, *, days: int) -> dict[str, asyncpg.Record]:
    """Per rule, over the last `days` days: decisions acted on (`acted`), would have acted in shadow mode
    (`shadow`), and the last evaluation (`last`)."""
    rows = await conn.fetch(
        """
        select rule,
               count(*) filter (where outcome = 'acted')                   as acted,
               count(*) filter (where outcome = 'would_act' and shadow)    as shadow,
               max(evaluated_at)                                           as last
        from rule_decisions where evaluated_at > now() - make_interval(days => $1)
        group by rule
        """,
        days,
    )
    return {r["rule"]: r for r in rows}


async def review_of(conn: asyncpg.Connection, decision_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from rule_decision_reviews where decision_id = $1", decision_id)


async def review_result(conn: asyncpg.Connection, decision_id: int) -> str | None:
    """What came of a decision's review (`result`); None while the engine has not reviewed it."""
    result: str | None = await conn.fetchval(
        "select result from rule_decision_reviews where decision_id = $1", decision_id)
    return result


async def record_review(
    conn: asyncpg.Connection, *, decision_id: int, verdict: str, by: str, message_id: uuid.UUID, result: str,
    run_id: uuid.UUID | None = None,
) -> None:
    await conn.execute(
        "insert into rule_decision_reviews (decision_id, verdict, reviewed_by, message_id, result, result_run_id) "
        "values ($1, $2, $3, $4, $5, $6) on conflict (decision_id) do nothing",
        decision_id, verdict, by, message_id, result[:2000], run_id,
    )


async def last_shadow_announcements(
    conn: asyncpg.Connection, rules: Sequence[str], since: datetime
) -> dict[tuple[str, str], datetime]:
    """When each (rule, entity) last had a shadow decision announced, since ``since``."""
    rows = await conn.fetch(
        "select rule, entity_id, max(evaluated_at) as at from rule_decisions "
        "where shadow and announced and rule = any($1::text[]) and evaluated_at > $2 group by rule, entity_id",
        list(rules), since,
    )
    return {(r["rule"], r["entity_id"]): r["at"] for r in rows}


async def pending_resume_levels(conn: asyncpg.Connection, now: datetime) -> set[str]:
    rows = await conn.fetch(
        "select distinct entity_level from rule_actions where kind = 'pause_for_today' and resume_at > $1",
        now - HISTORY,
    )
    return {r["entity_level"] for r in rows}


async def next_resume_at(conn: asyncpg.Connection, now: datetime) -> datetime | None:
    """The soonest pause-for-today end still ahead (the scheduler wakes up for it)."""
    value: datetime | None = await conn.fetchval(
        "select min(resume_at) from rule_actions where kind = 'pause_for_today' and resume_at > $1", now
    )
    return value


async def record_run(
    conn: asyncpg.Connection, *, run_id: uuid.UUID, trigger: str, trigger_message_id: uuid.UUID | None,
    accounts: Sequence[str], started_at: datetime, rules: Sequence[Rule], rule_problems: int, entities: int,
    decisions: Sequence[Decision],
) -> None:
    """The run, with the names of the rules it evaluated and which of them only notify (migration 0151)."""
    counts = Counter(d.outcome if d.reason is None else f"{d.outcome}:{d.reason}" for d in decisions)
    await conn.execute(
        """
        insert into rule_runs (run_id, trigger, trigger_message_id, accounts, started_at, rules, notify_only,
                               rule_problems, entities, decisions, acted, counts)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        """,
        run_id, trigger, trigger_message_id, list(accounts), started_at, [r.name for r in rules],
        [r.name for r in rules if r.notify_only], rule_problems, entities, len(decisions),
        sum(1 for d in decisions if d.outcome == "acted"), dict(counts),
    )


_INSERT_DECISION = """
    insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id,
                                currency, outcome, reason, capped, metrics, actions, explanation, shadow, announced)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
"""

# A run's decisions in one statement (migration 0160 counts them in `rule_decision_hours` once per statement), in
# their order (ids ascending as they were decided). JSON as text (`json.dumps`, as the pool's jsonb codec encodes).
_INSERT_DECISIONS = """
    insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id,
                                currency, outcome, reason, capped, metrics, actions, explanation, shadow, announced)
    select $1, evaluated_at, rule, entity_id, entity_level, entity_name, account_id, currency, outcome, reason,
           capped, metrics::jsonb, actions::jsonb, explanation, shadow, false
    from unnest($2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                $9::text[], $10::text[], $11::boolean[], $12::text[], $13::text[], $14::text[], $15::boolean[])
         with ordinality as d(evaluated_at, rule, entity_id, entity_level, entity_name, account_id, currency, outcome,
                              reason, capped, metrics, actions, explanation, shadow, position)
    order by position
"""


async def record_decisions(
    conn: asyncpg.Connection, run_id: uuid.UUID, decisions: Sequence[Decision], *, announced: Iterable[int] = ()
) -> dict[int, int]:
    """Store the decisions; those at the positions ``announced`` (shadow decisions announced in this run) are
    stored one by one for their ids: returns ``{position: decision id}`` for them."""
    announce = set(announced)

    def actions(d: Decision) -> list[dict[str, object]]:
        return [a.model_dump(mode="json") for a in d.actions]

    def values(d: Decision, flag: bool) -> tuple[object, ...]:
        return (run_id, d.evaluated_at, d.rule, d.entity_id, d.entity_level, d.entity_name, d.account_id,
                d.currency, d.outcome, d.reason, d.capped, d.metrics, actions(d), d.explanation, d.shadow, flag)

    rest = [d for i, d in enumerate(decisions) if i not in announce]
    if rest:
        await conn.execute(
            _INSERT_DECISIONS, run_id, [d.evaluated_at for d in rest], [d.rule for d in rest],
            [d.entity_id for d in rest], [d.entity_level for d in rest], [d.entity_name for d in rest],
            [d.account_id for d in rest], [d.currency for d in rest], [d.outcome for d in rest],
            [d.reason for d in rest], [d.capped for d in rest], [json.dumps(d.metrics) for d in rest],
            [json.dumps(actions(d)) for d in rest], [d.explanation for d in rest], [d.shadow for d in rest],
        )
    ids: dict[int, int] = {}
    for i in sorted(announce):
        ids[i] = await conn.fetchval(_INSERT_DECISION + " returning id", *values(decisions[i], True))
    return ids


# Skipped decisions one pruning statement deletes at most.
PRUNE_CHUNK = 5000

# One chunk of skipped decisions evaluated before the cutoff, newest first: the order of the indexes of 0140
# (`rule_decisions_status_time`, `rule_decisions_time_id`), so a chunk reads index entries from the cutoff on, never
# a scan of the table (whose old rows are spread over it once new decisions reuse the space pruned ones left). The
# ids as an array: the delete finds them through the primary key (`id in (select ...)` may hash-join a scan of the
# whole table, once per chunk). A reviewed decision is never deleted (its review would go with it: `on delete
# cascade`, 0060); only shadow decisions are reviewed, so none is skipped, but the guard keeps the audit safe.
# `rule_actions` has no foreign key to decisions and counts only for acted ones (`rule_decision_action`).
_PRUNE_SKIPPED = """
    delete from rule_decisions where id = any(array(
        select d.id from rule_decisions d
        where d.status = 'skipped' and d.evaluated_at < $1
          and not exists (select 1 from rule_decision_reviews v where v.decision_id = d.id)
        order by d.evaluated_at desc, d.id desc
        limit $2))
"""


async def prune_skipped_decisions(pool: asyncpg.Pool, *, older_than_days: int, chunk: int = PRUNE_CHUNK) -> int:
    """Delete skipped decisions (did not match, too little data, nothing to change) evaluated more than
    ``older_than_days`` days ago, ``chunk`` at a time, each chunk its own transaction (no statement holds locks for
    long); every other decision is the audit trail and kept. Returns how many were deleted.

    The delete trigger (0140) takes the pruned decisions out of `rule_decision_hours`: the summary counts the stored
    decisions, and those of the last 7 days (the Automation page's counts) stay exact while ``older_than_days`` is
    at least 8 (`RULES_SKIPPED_RETENTION_DAYS`).
    """
    cutoff: datetime = await pool.fetchval("select now() - make_interval(days => $1)", older_than_days)
    deleted = 0
    while True:
        status = await pool.execute(_PRUNE_SKIPPED, cutoff, chunk)
        count = int(status.split()[-1])
        deleted += count
        if count < chunk:
            break
    if deleted:
        logger.info("pruned %s skipped rule decisions older than %s days", deleted, older_than_days)
    return deleted


async def record_action(
    conn: asyncpg.Connection, run_id: uuid.UUID, decision: Decision, *, index: int, message_id: uuid.UUID,
    announce_channels: Sequence[str] | None = None, announce_email_to: Sequence[str] = (),
) -> bool:
    """Store one acted action; False if this command id was already recorded (same decision twice).

    ``announce_channels``: the decision is announced on these channels once the executor's result of this
    command arrives (None: announced already, or by another action of the decision)."""
    a = decision.actions[index]
    inserted = await conn.fetchval(
        """
        insert into rule_actions (command_id, run_id, rule, entity_id, entity_level, account_id, kind, budget_field,
                                  budget_minor, previous_budget_minor, currency, resume_at, acted_at, message_id,
                                  explanation, announce_channels, announce_email_to, reserve_id)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
        on conflict (command_id) do nothing
        returning true
        """,
        a.command_id, run_id, a.rule, a.entity_id, a.entity_level, a.account_id, a.kind, a.budget_field, a.budget,
        a.previous_budget, a.currency, a.resume_at, decision.evaluated_at, message_id, decision.explanation,
        list(announce_channels) if announce_channels is not None else None, list(announce_email_to), a.reserve_id,
    )
    return bool(inserted)


async def record_notification(
    conn: asyncpg.Connection, message_id: uuid.UUID, channels: Sequence[str], email_to: Sequence[str]
) -> None:
    await conn.execute(
        "insert into rule_notifications (message_id, channels, email_to) values ($1, $2, $3) "
        "on conflict do nothing",
        message_id, list(channels), list(email_to),
    )


async def claim_incident_alert(
    conn: asyncpg.Connection, key: str, state: str, since: datetime, message_id: uuid.UUID, reminder_seconds: float
) -> bool:
    """Whether this incident alert should be sent: True for the first "opened" of an incident, a reminder when
    none was sent for ``reminder_seconds``, the first "resolved"; and for a retry of the alert that claimed it.
    False for the same incident announced again by another process of the service (or after a restart)."""
    claimed = await conn.fetchval(
        """
        insert into incident_alerts (key, state, since, message_id) values ($1, $2, $3, $4)
        on conflict (key) do update set state = excluded.state, since = excluded.since, last_sent_at = now(),
            message_id = excluded.message_id
        where incident_alerts.message_id = excluded.message_id
           or (excluded.state = 'resolved' and incident_alerts.state <> 'resolved')
           or (excluded.state <> 'resolved' and (incident_alerts.state = 'resolved'
               or incident_alerts.last_sent_at < now() - make_interval(secs => $5)))
        returning true
        """,
        key, state, since, message_id, reminder_seconds,
    )
    return bool(claimed)


async def notification_route(conn: asyncpg.Connection, message_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select channels, email_to from rule_notifications where message_id = $1", message_id
    )


async def delivered_channels(conn: asyncpg.Connection, message_id: uuid.UUID) -> set[str]:
    rows = await conn.fetch("select channel from notification_deliveries where message_id = $1", message_id)
    return {r["channel"] for r in rows}


async def mark_delivered(conn: asyncpg.Connection, message_id: uuid.UUID, channel: str) -> None:
    await conn.execute(
        "insert into notification_deliveries (message_id, channel) values ($1, $2) on conflict do nothing",
        message_id, channel,
    )


async def record_crm_outcome(
    conn: asyncpg.Connection, *, lead_id: str, event_name: str, event_time: datetime, value: float | None,
    currency: str | None, message_id: uuid.UUID,
) -> bool:
    """One outcome per lead and event name (case-insensitive); the first one received is kept."""
    inserted = await conn.fetchval(
        """
        insert into rule_crm_outcomes (lead_id, event_name, event_time, value, currency, message_id)
        values ($1, $2, $3, $4, $5, $6)
        on conflict (lead_id, lower(event_name)) do nothing
        returning true
        """,
        lead_id, event_name, event_time, Decimal(str(value)) if value is not None else None, currency, message_id,
    )
    return bool(inserted)


async def action_for_command(conn: asyncpg.Connection, command_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select rule, entity_id, entity_level, account_id, kind, explanation, announce_channels, announce_email_to, "
        "announced_at from rule_actions where command_id = $1 for update",
        command_id,
    )


async def record_result(
    conn: asyncpg.Connection, command_id: uuid.UUID, status: str, detail: str, at: datetime,
    guardrail: str | None = None,
) -> None:
    await conn.execute(
        "update rule_actions set result_status = $2, result_detail = $3, result_at = $4, result_guardrail = $5 "
        "where command_id = $1",
        command_id, status, detail[:2000], at, guardrail,
    )


async def mark_announced(conn: asyncpg.Connection, command_id: uuid.UUID) -> None:
    await conn.execute("update rule_actions set announced_at = now() where command_id = $1", command_id)


async def update_breaker(
    conn: asyncpg.Connection, rule: str, *, ok: bool, detail: str, threshold: int
) -> tuple[int, bool]:
    """Count a command result of ``rule``; returns (consecutive failures, whether the breaker just opened)."""
    row = await conn.fetchrow(
        """
        insert into rule_breakers as b (rule, failures, last_detail, opened_at, updated_at)
        values ($1, case when $2 then 0 else 1 end, $3, case when not $2 and $4 <= 1 then now() end, now())
        on conflict (rule) do update set
            failures = case when $2 then 0 else b.failures + 1 end,
            last_detail = case when $2 then b.last_detail else excluded.last_detail end,
            opened_at = case when $2 then null
                             when b.failures + 1 >= $4 then coalesce(b.opened_at, now())
                             else b.opened_at end,
            updated_at = now()
        returning failures, (opened_at is not null and failures = $4) as just_opened
        """,
        rule, ok, detail[:2000], threshold,
    )
    assert row is not None
    return row["failures"], bool(row["just_opened"])


async def reset_breaker(conn: asyncpg.Connection, rule: str) -> bool:
    status = await conn.execute(
        "update rule_breakers set failures = 0, opened_at = null, updated_at = now() where rule = $1", rule
    )
    return status.endswith(" 1")


async def breakers(conn: asyncpg.Connection) -> Mapping[str, asyncpg.Record]:
    return {r["rule"]: r for r in await conn.fetch("select * from rule_breakers order by rule")}
