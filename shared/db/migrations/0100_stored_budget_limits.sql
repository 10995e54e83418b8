-- Owner: campaign_executor. What its hard budget limits know, for the rules engine to decide within them (so a
-- rule never decides a raise the executor will refuse, and the refusals do not trip the rule's circuit breaker).
--
-- One row per object (campaign or ad set) or ad account the executor knows something about:
--   first_seen_daily_minor: the daily budget (account: the sum of active daily budgets) leadwire first saw;
--   increases_week: budget increases applied or being applied in the last rolling 7 days;
--   blocked_until: Meta refused a budget change (613/1487632) and blocks the object's budget changes until then.
create view stored_budget_limits as
with seen as (
    select key, scope, account_id, daily_minor from first_seen_budgets
), increases as (
    select object_id as key, count(*)::int as increases_week
    from campaign_commands
    where kind in ('set_budget', 'change_budget') and not dry_run and status in ('applying', 'ok')
      and applying_at > now() - interval '7 days'
      and coalesce((plan->>'daily_budget')::bigint, (plan->>'lifetime_budget')::bigint) > (plan->>'from')::bigint
    group by object_id
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
