-- Rules engine (services/rules_engine): CRM outcomes read model, evaluation audit, action history, circuit breaker,
-- notification bookkeeping. Money columns are integers in the account currency's minor unit (meta-api-facts §11.1).

-- CRM outcomes per lead, from ConversionRequested messages that carry user.lead_id. Which event names count as a
-- qualified lead or a signed case is decided when a snapshot is built (RULES_QUALIFIED_EVENTS / _SIGNED_EVENTS),
-- so changing that setting applies to the history too. One row per lead and event name (case-insensitive).
create table rule_crm_outcomes (
    lead_id       text        not null,                -- Meta leadgen id; joined with leads.leadgen_id
    event_name    text        not null,
    event_time    timestamptz not null,
    value         numeric,                             -- custom_data.value, major units
    currency      text,
    message_id    uuid        not null,
    received_at   timestamptz not null default now()
);
create unique index rule_crm_outcomes_lead_event on rule_crm_outcomes (lead_id, lower(event_name));

-- One row per evaluation run.
create table rule_runs (
    run_id             uuid        primary key,
    trigger            text        not null,           -- insights_updated | schedule | manual
    trigger_message_id uuid,                           -- the InsightsUpdated that caused it
    accounts           text[]      not null,
    started_at         timestamptz not null,
    finished_at        timestamptz not null default now(),
    rules              text[]      not null,           -- enabled rules evaluated
    rule_problems      integer     not null default 0, -- problems found in rule files (those files were skipped)
    entities           integer     not null,
    decisions          integer     not null,
    acted              integer     not null,
    counts             jsonb       not null default '{}'  -- outcome[:reason] -> n
);
create index rule_runs_started_at on rule_runs (started_at);
create index rule_runs_trigger_message on rule_runs (trigger_message_id) where trigger_message_id is not null;

-- Audit: every decision (acted, would_act, skipped and why) with the numbers behind it and its explanation.
create table rule_decisions (
    id            bigint      generated always as identity primary key,
    run_id        uuid        not null references rule_runs (run_id),
    evaluated_at  timestamptz not null,
    rule          text        not null,
    entity_id     text        not null,
    entity_level  text        not null,
    entity_name   text        not null,
    account_id    text        not null,
    currency      text        not null,
    outcome       text        not null check (outcome in ('acted', 'would_act', 'skipped')),
    reason        text,
    capped        boolean     not null default false,
    metrics       jsonb       not null,                -- window -> metric -> value (money in minor units)
    actions       jsonb       not null default '[]',
    explanation   text        not null
);
create index rule_decisions_run on rule_decisions (run_id);
create index rule_decisions_rule_entity on rule_decisions (rule, entity_id, evaluated_at);
create index rule_decisions_evaluated_at on rule_decisions (evaluated_at);

-- Actions the engine took (acted decisions only): the history cooldowns, daily caps, the budget-change rate
-- and pause-for-today resumes are computed from, so they survive restarts. command_id = CampaignCommand id.
create table rule_actions (
    command_id            uuid        primary key,
    run_id                uuid        not null references rule_runs (run_id),
    rule                  text        not null,
    entity_id             text        not null,
    entity_level          text        not null,
    account_id            text        not null,
    kind                  text        not null,        -- pause pause_for_today unpause change_budget set_budget notify
    budget_field          text,
    budget_minor          bigint,
    previous_budget_minor bigint,
    currency              text,
    resume_at             timestamptz,
    acted_at              timestamptz not null,
    message_id            uuid        not null,        -- the CampaignCommand (or AlertRaised for notify) sent
    result_status         text,                        -- from CommandResult: ok refused failed dry_run
    result_detail         text,
    result_at             timestamptz
);
create index rule_actions_acted_at on rule_actions (acted_at);
create index rule_actions_entity on rule_actions (entity_id, acted_at);

-- Circuit breaker: consecutive failed (or refused) commands per rule; reset by a success or `leadwire rules reset`.
create table rule_breakers (
    rule          text        primary key,
    failures      integer     not null default 0,
    last_detail   text,
    opened_at     timestamptz,
    updated_at    timestamptz not null default now()
);

-- Notifications the engine raised (as AlertRaised): which channels and recipients its rule asked for.
create table rule_notifications (
    message_id    uuid        primary key,
    channels      text[]      not null,
    email_to      text[]      not null default '{}',
    created_at    timestamptz not null default now()
);

-- Channels an alert was delivered to, so a retry after a failing channel does not repeat the others.
create table notification_deliveries (
    message_id    uuid        not null,
    channel       text        not null,
    delivered_at  timestamptz not null default now(),
    primary key (message_id, channel)
);
