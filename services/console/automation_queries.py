"""The Automation page's reads and writes.

Reads name the rules engine's `console_rule_*` views and functions (migrations 0060, 0140, 0151), never its
tables: the 7-day counts per rule come from its per-hour summary, the status of each decision is stored with it,
each run names the rules it evaluated and which of them only notify. Writes are messages to the rules engine
(`RuleConsentChanged`, `RuleDecisionReviewed`), put in the outbox in the same transaction as the console's own audit
row: the console writes no other service's tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.outbox import enqueue

if TYPE_CHECKING:
    import asyncpg

PAGE_SIZE = 50


@dataclass(frozen=True)
class DecisionFilter:
    rule: str | None = None
    entity: str | None = None  # an object id, or part of its name
    status: str | None = None
    page: int = 0


# `notify_only`: the decision's rule only notified, as its run recorded (migration 0151).
_DECISIONS = """
select id, run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id, currency, outcome, reason,
       capped, shadow, metrics, explanation, action_kind, result_status, result_detail, result_guardrail, result_at,
       status, verdict, reviewed_by, reviewed_at, review_result,
       coalesce((select d.rule = any(r.notify_only) from console_rule_runs r where r.run_id = d.run_id), false)
           as notify_only
from console_rule_decisions d
where ($1::text is null or rule = $1)
  and ($2::text is null or entity_id = $2 or entity_name ilike '%' || $3 || '%')
  and ($4::text is null or status = $4)
order by evaluated_at desc, id desc
limit $5 offset $6
"""

# The newest evaluation (not an approval's, which evaluates one rule): the rules enabled in their files, and which
# of them only notify (migration 0151).
_LATEST_RUN = ("select rules, notify_only from console_rule_runs where trigger <> 'approval' "
               "order by started_at desc limit 1")

# The rules of the newest evaluation, and every rule with a consent record.
_RULES = f"""
with latest as ({_LATEST_RUN}), names as (
    select unnest(rules) as rule from latest
    union
    select rule from console_rule_consent
), recent as (
    select rule, sum(decisions) filter (where status = 'acted')  as acted,
                 sum(decisions) filter (where status = 'failed') as failed,
                 sum(decisions) filter (where status = 'shadow') as shadow,
                 sum(decisions) filter (where status = 'held')   as held,
                 max(last_decision)                              as last_decision
    from console_rule_decision_counts(now() - interval '7 days')
    group by rule
)
select n.rule, coalesce(c.enabled, false) as enabled, c.changed_by, c.changed_at, c.note,
       coalesce(r.acted, 0)::integer as acted, coalesce(r.failed, 0)::integer as failed,
       coalesce(r.shadow, 0)::integer as shadow, coalesce(r.held, 0)::integer as held, r.last_decision,
       n.rule in (select unnest(rules) from latest) as evaluated,
       n.rule in (select unnest(notify_only) from latest) as notify_only
from names n
left join console_rule_consent c using (rule)
left join recent r using (rule)
order by n.rule
"""  # noqa: S608 - constant text

_RUNS = """
select run_id, trigger, accounts, started_at, finished_at, rules, entities, decisions, acted, counts
from console_rule_runs order by started_at desc limit $1
"""


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def decisions(pool: asyncpg.Pool, where: DecisionFilter) -> list[dict[str, Any]]:
    entity = where.entity.strip() if where.entity else None
    rows = await pool.fetch(_DECISIONS, where.rule, entity or None, _like_escaped(entity) if entity else None,
                            where.status, PAGE_SIZE + 1, where.page * PAGE_SIZE)
    return [dict(r) for r in rows]


async def rules(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(_RULES)]


async def notify_only(pool: asyncpg.Pool, rule: str) -> bool:
    """Whether the newest evaluation found ``rule`` notify-only (then consent means nothing for it)."""
    found: bool | None = await pool.fetchval(
        f"select $1 = any(notify_only) from ({_LATEST_RUN}) latest", rule)  # noqa: S608 - constant text
    return bool(found)


async def runs(pool: asyncpg.Pool, limit: int = 10) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(_RUNS, limit)]


async def decision(pool: asyncpg.Pool, decision_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow("select id, rule, status, verdict from console_rule_decisions where id = $1",
                              decision_id)
    return dict(row) if row else None


async def send(pool: asyncpg.Pool, message: Any, *, username: str, action: str, subject: str) -> None:
    """Hand a message to the rules engine (outbox) and record who asked, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, message)
        await conn.execute("insert into console_audit (username, action, subject) values ($1, $2, $3)",
                           username, action, subject)
