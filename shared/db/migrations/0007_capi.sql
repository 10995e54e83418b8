-- Conversions API send log: one row per (pixel, event_name, event_id), the key Meta deduplicates on
-- (meta-api-facts §8.5). It makes "send once per 48 hours" hold across restarts, redeliveries and processes:
-- a batch claims its keys ('sending') before the POST and marks them 'sent' once Meta accepted the request.
-- Customer data is kept only as the SHA-256 hashes Meta received: never a clear e-mail, phone or name.
create table capi_events (
    dedupe_key       text primary key,            -- sha256 of [pixel_id, event_name, event_id]
    pixel_id         text        not null,
    event_name       text        not null,
    event_id         text        not null,
    event_time       timestamptz not null,
    lead_id          text,                        -- Meta's lead id (not PII), to trace a CRM stage to its lead
    status           text        not null check (status in ('sending', 'sent', 'rejected', 'failed')),
    batch_id         uuid        not null,        -- the request that carried it (a bisected part has its own)
    claimed_at       timestamptz not null default now(),
    sent_at          timestamptz,
    user_data_hashes jsonb       not null default '{}', -- Meta key -> SHA-256 hex, hashed keys only
    identifiers      text[]      not null default '{}', -- names of every user_data key sent, never values
    dropped_fields   text[]      not null default '{}', -- customer fields left out as invalid (names only)
    test_event_code  text,
    events_received  integer,                     -- Meta's count for the whole request
    fbtrace_id       text,
    error            jsonb                        -- Meta's code/subcode/fbtrace_id/message when rejected
);
create index capi_events_sent_at on capi_events (sent_at);
create index capi_events_batch on capi_events (batch_id);
