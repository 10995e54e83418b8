-- Owner: rules_engine (it sends every alert). One row per incident (service, dependency, kind): what was last sent
-- for it, so that two processes of one service (CAPI_WORKERS=2, a restart mid-outage) announcing the same incident
-- give the operator one "opened", at most one reminder per ALERT_REMINDER_MINUTES and one "resolved".
create table incident_alerts (
    key          text        primary key,        -- service|dependency|kind
    state        text        not null check (state in ('opened', 'reminder', 'resolved')),
    since        timestamptz not null,
    last_sent_at timestamptz not null default now(),
    message_id   uuid        not null            -- the alert that claimed the last sending (its retries may send)
);
