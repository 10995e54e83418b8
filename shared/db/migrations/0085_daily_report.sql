-- The daily report (services/reports): what it sent where, and read models over other services' tables.
-- The report reads views only (these, and the console_* views of 0020), never another service's table.

-- One row per ad account, report day and channel (slack, email): delivered, waiting for another try (with the
-- last error: a status or an error class, never a credential or lead data), or given up (a permanent error).
create table report_deliveries (
    account_id       text        not null,
    report_date      date        not null,             -- the day reported on (the account's time zone)
    channel          text        not null,
    attempts         integer     not null default 0,
    last_error       text,
    next_attempt_at  timestamptz,
    delivered_at     timestamptz,
    gave_up          boolean     not null default false,
    updated_at       timestamptz not null default now(),
    primary key (account_id, report_date, channel)
);

-- What was stuck or broken when each scheduled report was made (counts only): the next day's report shows the
-- change from it.
create table report_snapshots (
    account_id   text        not null,
    report_date  date        not null,
    stuck        jsonb       not null,
    created_at   timestamptz not null default now(),
    primary key (account_id, report_date)
);

-- What the rules decided (rules_engine's audit): acted, would act (shadow / dry run), skipped and why.
create view report_rule_decisions as
select evaluated_at, rule, entity_id, entity_level, entity_name, account_id, currency, outcome, reason, explanation
from rule_decisions;

-- Problems still open: rules whose circuit breaker is open, and lead-access alerts of the last 24 hours.
create view report_open_alerts as
select 'rule_breaker'::text as kind, rule as subject, last_detail as detail, opened_at as since
from rule_breakers
where opened_at is not null
union all
select 'lead_access', page_id, code, raised_at
from lead_alerts
where raised_at > now() - interval '24 hours';
