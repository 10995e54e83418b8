-- Read models of the operator's console (services/console), one view per need: the console reads these views,
-- never the tables behind them, so a service may change its tables as long as it keeps its view's columns.
-- The console writes only its own tables (sessions, audit); changes to other services go through messages.

-- Operators' sessions: the cookie holds a random token, this table only its SHA-256.
create table console_sessions (
    token_sha256  text        primary key,
    username      text        not null,
    csrf_token    text        not null,
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null
);
create index console_sessions_expires_at on console_sessions (expires_at);

-- Who did what in the console, and when: revealing a lead's personal data, logging in and out.
create table console_audit (
    id          bigint      generated always as identity primary key,
    at          timestamptz not null default now(),
    username    text        not null,
    action      text        not null,                  -- login, login_failed, logout, reveal_lead
    subject     text                                   -- a lead id for reveal_lead; never personal data
);
create index console_audit_subject on console_audit (subject, at) where subject is not null;

-- One row per stored lead with where it came from (names as last synced, else as Meta gave them in the lead) and
-- its CRM delivery state over every adapter: delivered (to at least one), failed (given up), waiting
-- (pending / retrying / no delivery yet), skipped (no CRM adapter set up).
create view console_leads as
select l.leadgen_id,
       l.created_time,
       l.fetched_at,
       l.source,
       l.page_id,
       l.form_id,
       l.campaign_id,
       l.adset_id,
       l.ad_id,
       coalesce(c.name, l.raw ->> 'campaign_name') as campaign_name,
       coalesce(s.name, l.raw ->> 'adset_name')    as adset_name,
       coalesce(a.name, l.raw ->> 'ad_name')       as ad_name,
       l.is_organic,
       l.platform,
       d.delivered_at,
       coalesce(d.attempts, 0) as crm_attempts,
       case
           when d.delivered then 'delivered'
           when d.failed then 'failed'
           when d.open or d.leadgen_id is null then 'waiting'
           else 'skipped'
       end as crm_status
from leads l
left join campaigns c on c.campaign_id = l.campaign_id
left join adsets s on s.adset_id = l.adset_id
left join ads a on a.ad_id = l.ad_id
left join lateral (
    select cd.leadgen_id,
           bool_or(cd.status = 'delivered')             as delivered,
           bool_or(cd.status = 'failed')                as failed,
           bool_or(cd.status in ('pending', 'retrying')) as open,
           min(cd.delivered_at)                          as delivered_at,
           sum(cd.attempts)::integer                     as attempts
    from crm_deliveries cd
    where cd.leadgen_id = l.leadgen_id
    group by cd.leadgen_id
) d on true;

-- A lead's answers (personal data): read only when an operator reveals them, and recorded in console_audit.
create view console_lead_answers as
select leadgen_id, fields from leads;

-- LeadCaptured messages: when each was written and when the broker confirmed it (outbox relay). Look one up by
-- message_id (contracts.leads.captured_message_id of the lead id), which is indexed.
create view console_lead_captured as
select message_id, body -> 'payload' ->> 'leadgen_id' as leadgen_id, created_at, published_at
from outbox
where message_type = 'LeadCaptured';

-- Delivery per CRM adapter (attempts and last error: a status code or error class, never lead data).
create view console_crm_deliveries as
select leadgen_id, adapter, status, attempts, last_error, crm_reference, created_at, updated_at, delivered_at
from crm_deliveries;

-- Outcomes the CRM reported for a lead (qualified, signed, ...), as the rules engine recorded them.
create view console_crm_outcomes as
select lead_id as leadgen_id, event_name, event_time, value, currency, received_at
from rule_crm_outcomes;

-- Conversions API sends about a lead, with Meta's receipt (events_received, fbtrace_id) or its error.
-- capi_events keeps about 48 hours (Meta's dedupe window): older sends are no longer listed.
create view console_capi_sends as
select lead_id as leadgen_id, pixel_id, event_name, event_id, event_time, status, claimed_at, sent_at,
       events_received, fbtrace_id, error, test_event_code is not null as is_test
from capi_events;

-- Spend, impressions and Meta-counted leads per campaign and day (the account's time zone), with the account's
-- currency and minor-unit offset.
create view console_spend_daily as
select i.account_id, i.date, i.campaign_id,
       max(coalesce(c.name, i.campaign_name)) as campaign_name,
       i.currency, acc.currency_offset,
       sum(i.spend_minor)::bigint  as spend_minor,
       sum(i.impressions)::bigint  as impressions,
       sum(i.clicks)::bigint       as clicks,
       sum(i.leads)::bigint        as leads
from insights_daily i
join ad_accounts acc on acc.account_id = i.account_id
left join campaigns c on c.campaign_id = i.campaign_id
group by i.account_id, i.date, i.campaign_id, i.currency, acc.currency_offset;

-- The same per ad set and day, for the Performance page's ad set rows.
create view console_adset_spend_daily as
select i.account_id, i.date, i.campaign_id, i.adset_id,
       max(coalesce(c.name, i.campaign_name)) as campaign_name,
       max(coalesce(s.name, i.adset_name))    as adset_name,
       i.currency, acc.currency_offset,
       sum(i.spend_minor)::bigint  as spend_minor,
       sum(i.impressions)::bigint  as impressions,
       sum(i.clicks)::bigint       as clicks,
       sum(i.leads)::bigint        as leads
from insights_daily i
join ad_accounts acc on acc.account_id = i.account_id
left join campaigns c on c.campaign_id = i.campaign_id
left join adsets s on s.adset_id = i.adset_id
group by i.account_id, i.date, i.campaign_id, i.adset_id, i.currency, acc.currency_offset;

-- The ad accounts: time zone (insights days are days there), currency and freshness of the numbers.
create view console_ad_accounts as
select account_id, name, currency, currency_offset, timezone_name, account_status, last_refresh_at,
       objects_synced_at
from ad_accounts;

-- What the database knows about the system's health, one row.
create view console_health as
select
    (select max(fetched_at) from leads where source = 'webhook')                       as last_webhook_lead_at,
    (select max(fetched_at) from leads where source = 'backfill')                      as last_backfill_lead_at,
    (select max(delivered_at) from crm_deliveries)                                     as last_crm_delivery_at,
    (select count(*) from crm_deliveries where status = 'failed')::integer             as crm_failed,
    (select count(*) from crm_deliveries where status in ('pending', 'retrying'))::integer as crm_open,
    (select max(received_at) from rule_crm_outcomes)                                   as last_crm_outcome_at,
    (select max(sent_at) from capi_events where status = 'sent')                       as last_capi_sent_at,
    (select count(*) from capi_events
      where status = 'rejected' and claimed_at > now() - interval '24 hours')::integer  as capi_rejected_24h,
    (select max(last_refresh_at) from ad_accounts)                                     as last_insights_refresh_at,
    (select count(*) from lead_alerts where raised_at > now() - interval '24 hours')::integer as lead_alerts_24h,
    (select count(*) from outbox where published_at is null
       and created_at < now() - interval '1 minute')::integer                          as outbox_backlog;
