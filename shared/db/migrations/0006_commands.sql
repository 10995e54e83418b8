-- Audit log of campaign commands (services/campaign_executor), one row per command_id (the idempotency key).
--
-- status: received -> (applying ->) ok | refused | failed | dry_run. A row left in `applying` means an attempt
-- touched Meta and did not finish; `plan` holds what that attempt computed (the absolute budget target of a
-- relative change, created object ids), so the next attempt finishes the same change instead of re-deciding.
-- `payload` never holds PII: audience uploads keep counts and a digest of the hashed rows only.
create table campaign_commands (
    command_id    uuid        primary key,
    message_id    uuid        not null,
    kind          text        not null,
    account_id    text,
    object_id     text,
    level         text,
    dry_run       boolean     not null default false,
    force         boolean     not null default false,
    requested_by  text        not null,
    reason        text        not null default '',
    payload       jsonb       not null,
    status        text        not null default 'received'
        check (status in ('received', 'applying', 'ok', 'refused', 'failed', 'dry_run')),
    plan          jsonb,
    result        jsonb,
    attempts      integer     not null default 0,
    received_at   timestamptz not null default now(),
    applying_at   timestamptz,
    finished_at   timestamptz
);

-- Guardrail "at most N budget changes per ad set per hour" counts applied (or being applied) changes here.
create index campaign_commands_budget_changes on campaign_commands (object_id, applying_at)
    where kind in ('set_budget', 'change_budget') and not dry_run;
create index campaign_commands_received_at on campaign_commands (received_at);
