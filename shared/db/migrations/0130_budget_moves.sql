-- Owner: campaign_executor. The parts of a `rebalance_budgets` command (issue 20): one row per object whose daily
-- budget the command moves, so the guardrails that count budget changes per object (changes per hour, increases
-- per week) count these too, whichever command made them.
--
-- state: planned -> applying -> applied | refused | failed | abandoned. `applying` is written (with applying_at)
-- before the change is sent to Meta, so a change whose answer was lost still counts.
create table budget_moves (
    command_id   uuid        not null references campaign_commands (command_id) on delete cascade,
    object_id    text        not null,
    account_id   text,
    level        text        not null check (level in ('campaign', 'adset')),
    from_minor   bigint      not null check (from_minor > 0),
    to_minor     bigint      not null check (to_minor > 0),
    state        text        not null default 'planned'
        check (state in ('planned', 'applying', 'applied', 'refused', 'failed', 'abandoned')),
    detail       text        not null default '',
    applying_at  timestamptz,
    primary key (command_id, object_id)
);

create index budget_moves_object on budget_moves (object_id, applying_at) where state in ('applying', 'applied');

-- The view the rules engine reads keeps its columns; a rebalance's increases count as the object's increases.
create or replace view stored_budget_limits as
with seen as (
    select key, scope, account_id, daily_minor from first_seen_budgets
), increases as (
    select key, sum(n)::int as increases_week from (
        select object_id as key, count(*) as n
        from campaign_commands
        where kind in ('set_budget', 'change_budget') and not dry_run and status in ('applying', 'ok')
          and applying_at > now() - interval '7 days'
          and coalesce((plan->>'daily_budget')::bigint, (plan->>'lifetime_budget')::bigint) > (plan->>'from')::bigint
        group by object_id
        union all
        select object_id as key, count(*) as n
        from budget_moves
        where state in ('applying', 'applied') and applying_at > now() - interval '7 days' and to_minor > from_minor
        group by object_id
    ) parts
    group by key
), blocks as (
    select object_id as key, blocked_until from meta_budget_blocks where blocked_until > now()
)
select key,
       coalesce(seen.scope, 'object') as scope,
       seen.daily_minor as first_seen_daily_minor,
       coalesce(increases.increases_week, 0) as increases_week,
       blocks.blocked_until
from seen
full join increases using (key)
full join blocks using (key);
