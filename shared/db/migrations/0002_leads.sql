-- Leads fetched from Meta. Answers are PII: they live here, never on the broker or in logs.
create table leads (
    leadgen_id      text primary key,                 -- Meta lead id (webhook leadgen_id)
    page_id         text        not null,
    form_id         text,
    ad_id           text,
    adset_id        text,
    campaign_id     text,
    created_time    timestamptz not null,             -- when the person submitted the form (Meta's created_time)
    is_organic      boolean     not null default false,
    platform        text,                             -- fb, ig, ...
    fields          jsonb       not null default '{}', -- flattened answers: question key -> value (first value)
    custom_disclaimer_responses jsonb not null default '[]',
    raw             jsonb       not null,             -- the lead exactly as the Graph API returned it
    source          text        not null,             -- webhook | backfill
    fetched_at      timestamptz not null default now()
);
create index leads_created_time on leads (created_time);
create index leads_form_created on leads (form_id, created_time);

-- Backfill watermark per lead form: leads created after it were not yet scanned.
create table lead_form_watermarks (
    form_id      text primary key,
    page_id      text        not null,
    scanned_to   timestamptz not null,
    updated_at   timestamptz not null default now()
);
