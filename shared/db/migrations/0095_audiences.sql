-- campaign_executor's: customer-file audiences kept in sync with the CRM (docs: README "Audiences"), and lookalikes.
-- One row per audience definition name (EXECUTOR_AUDIENCES_FILE), with Meta's id once created: created once, never
-- again (a definition whose row exists is only synced).
create table audiences (
    name               text        primary key,
    account_id         text        not null,
    audience_id        text        not null unique,
    subtype            text        not null check (subtype in ('CUSTOM', 'LOOKALIKE')),
    origin_audience_id text,                          -- lookalikes: the seed's Meta id
    lookalike_spec     jsonb,
    created_at         timestamptz not null default now(),
    synced_at          timestamptz,
    last_counts        jsonb       not null default '{}'  -- rows sent/dropped/removed, Meta's approximate size
);

-- Who is in each customer-file audience as leadwire last sent it: the lead and the row as Meta received it
-- (normalized and SHA-256 hashed, never clear text), so a lead leaving the definition is removed with the same row.
create table audience_members (
    audience_id text        not null references audiences (audience_id),
    leadgen_id  text        not null,
    row_sent    text[]      not null,
    added_at    timestamptz not null default now(),
    primary key (audience_id, leadgen_id)
);

-- The CRM outcomes the rules engine records (rule_crm_outcomes), read here and never from its table.
create view audience_crm_outcomes as
select lead_id as leadgen_id, lower(event_name) as event_name, event_time
from rule_crm_outcomes;
