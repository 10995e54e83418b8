-- campaign_executor's: lead forms leadwire created (or found at Meta under the same name on the Page), one row per
-- (Page, name): created once, never again. Meta's names are not unique, so this record is what keeps
-- `leadwire forms create` idempotent.
create table lead_forms (
    page_id     text        not null,
    name        text        not null,
    form_id     text        not null unique,
    digest      text        not null,              -- SHA-256 of the definition it was created from
    adopted     boolean     not null default false, -- found at Meta by name (an interrupted earlier attempt, or made
                                                    -- elsewhere) rather than created by this command
    command_id  uuid        not null,
    created_at  timestamptz not null default now(),
    primary key (page_id, name)
);

-- What lead_fetcher's backfill reads: the forms leadwire made, so each is scanned (from its creation) even before,
-- or without, the Page's form listing showing it.
create view created_lead_forms as
select form_id, page_id, name, created_at from lead_forms;
