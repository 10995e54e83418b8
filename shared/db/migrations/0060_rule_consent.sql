-- Rules engine (services/rules_engine): the operator's consent, verdicts on shadow decisions, announcements after
-- the executor's result, and the console's read models of the automation (issue 15 items 1 and 4, issue 18).

-- A rule acts (sends commands to Meta) only once an operator enabled it; until then it runs in shadow mode: its
-- decisions are recorded and announced as "would ...". Written only by the rules engine, from RuleConsentChanged
-- messages (`leadwire rules enable|disable`, the console). No row = shadow mode.
create table rule_consent (
    rule        text        primary key,
    enabled     boolean     not null,
    changed_by  text        not null,
    note        text        not null default '',
    changed_at  timestamptz not null default now(),
    message_id  uuid        not null
);

-- Every change of consent, in order.
create table rule_consent_log (
    id          bigint      generated always as identity primary key,
    rule        text        not null,
    enabled     boolean     not null,
    changed_by  text        not null,
    note        text        not null default '',
    changed_at  timestamptz not null default now(),
    message_id  uuid        not null unique
);

-- Decisions of a rule in shadow mode (would_act only because it is not enabled), and whether that one was
-- announced (a shadow decision is announced once per rule's cooldown, not on every run).
alter table rule_decisions add column shadow boolean not null default false;
alter table rule_decisions add column announced boolean not null default false;
create index rule_decisions_shadow_announced on rule_decisions (rule, entity_id, evaluated_at)
    where shadow and announced;

-- An operator's verdict on a shadow decision. Approving evaluates the rule again for that object now (the same
-- guardrails as an enabled rule) and acts only if it still decides to: `result_run_id` is that evaluation.
create table rule_decision_reviews (
    decision_id    bigint      primary key references rule_decisions (id) on delete cascade,
    verdict        text        not null check (verdict in ('approve', 'reject')),
    reviewed_by    text        not null,
    reviewed_at    timestamptz not null default now(),
    message_id     uuid        not null,
    result_run_id  uuid,
    result         text        not null default ''
);

-- A rule's announcement waits for the executor's result: what to say and where, kept with the command's action.
alter table rule_actions add column explanation text;
alter table rule_actions add column announce_channels text[];
alter table rule_actions add column announce_email_to text[] not null default '{}';
alter table rule_actions add column announced_at timestamptz;
alter table rule_actions add column result_guardrail text;   -- the executor's guardrail that refused it
create index rule_actions_run on rule_actions (run_id);

-- Console (services/console) read models of the automation: it reads these views, never the tables.

-- Each rule's consent (rules without a row are in shadow mode).
create view console_rule_consent as
select rule, enabled, changed_by, note, changed_at from rule_consent;

-- Evaluation runs.
create view console_rule_runs as
select run_id, trigger, accounts, started_at, finished_at, rules, rule_problems, entities, decisions, acted, counts
from rule_runs;

-- Every decision with its numbers and sentence, what came of it, and the operator's verdict. `status`:
-- acted (the executor applied it), failed (Meta or the executor's hard limits refused it; `result_detail` and
-- `result_guardrail` say why), sent (waiting for the executor), shadow (would act once enabled), dry_run,
-- held (a guardrail held it: `reason`), skipped (did not match, too little data, nothing to change).
create view console_rule_decisions as
select d.id, d.run_id, d.evaluated_at, d.rule, d.entity_id, d.entity_level, d.entity_name, d.account_id,
       d.currency, d.outcome, d.reason, d.capped, d.shadow, d.metrics, d.explanation,
       a.kind as action_kind, a.command_id, a.result_status, a.result_detail, a.result_guardrail, a.result_at,
       a.announced_at,
       case
           when d.outcome = 'acted' and a.result_status = 'ok' then 'acted'
           when d.outcome = 'acted' and a.result_status in ('failed', 'refused') then 'failed'
           when d.outcome = 'acted' and a.command_id is not null then 'sent'
           when d.outcome = 'acted' then 'acted'
           when d.outcome = 'would_act' and d.shadow then 'shadow'
           when d.outcome = 'would_act' then 'dry_run'
           when d.reason in ('not_matched', 'insufficient_data', 'no_change') then 'skipped'
           else 'held'
       end as status,
       v.verdict, v.reviewed_by, v.reviewed_at, v.result as review_result
from rule_decisions d
left join lateral (
    select ra.kind, ra.command_id, ra.result_status, ra.result_detail, ra.result_guardrail, ra.result_at,
           ra.announced_at
    from rule_actions ra
    where ra.run_id = d.run_id and ra.rule = d.rule and ra.entity_id = d.entity_id and ra.kind <> 'notify'
    limit 1
) a on true
left join rule_decision_reviews v on v.decision_id = d.id;
