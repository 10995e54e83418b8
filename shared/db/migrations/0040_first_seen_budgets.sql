-- Hard budget limits of the campaign executor (services/campaign_executor): what leadwire first saw.
--
-- One row per campaign or ad set (scope 'object': its daily budget when the executor first read it) and per ad
-- account (scope 'account': the sum of its active daily budgets when first read). Written once, never updated:
-- the executor refuses any daily budget above BUDGET_MAX_MULTIPLE_OF_FIRST_SEEN times these, `force` or not.
create table first_seen_budgets (
    key          text        primary key,  -- an object id (digits) or an ad account id (act_...)
    scope        text        not null check (scope in ('object', 'account')),
    account_id   text,
    currency     text        not null,
    daily_minor  bigint      not null check (daily_minor >= 0),
    first_seen   timestamptz not null default now()
);

-- Guardrail "at most N budget increases per object per week" reads the applied budget commands of a week.
create index campaign_commands_budget_week on campaign_commands (object_id, applying_at)
    where kind in ('set_budget', 'change_budget') and not dry_run and status in ('applying', 'ok');
