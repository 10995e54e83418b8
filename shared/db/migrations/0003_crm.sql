-- CRM delivery state: one row per lead and CRM adapter (webhook, gohighlevel; `none` when no adapter is set up).
-- A `delivered` row is never delivered again, so a redelivered LeadCaptured creates no second contact.
-- last_error holds a status code or error class only, never lead data.
create table crm_deliveries (
    leadgen_id    text        not null,
    adapter       text        not null,
    status        text        not null default 'pending'
                  check (status in ('pending', 'retrying', 'delivered', 'failed', 'skipped')),
    attempts      integer     not null default 0,
    last_error    text,
    crm_reference text,                              -- the CRM's id for the contact, when it returns one
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    delivered_at  timestamptz,
    primary key (leadgen_id, adapter)
);
-- What operators look at: deliveries still open or given up.
create index crm_deliveries_open on crm_deliveries (status, updated_at) where status <> 'delivered';
