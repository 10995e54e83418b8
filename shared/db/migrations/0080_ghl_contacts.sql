-- crm_sync's: the GoHighLevel contact of each lead, recorded the moment GoHighLevel answered the upsert (before the
-- tags, the note and the delivery's commit). A retry after a crash (a SIGKILL mid-delivery) then updates that
-- contact rather than creating another where GoHighLevel's upsert could not find it (a lead with neither e-mail nor
-- phone), adds the note at most once, and an outcome GoHighLevel posts finds its lead by contact id even before the
-- delivery committed.
create table ghl_contacts (
    leadgen_id  text        primary key,
    location_id text        not null,
    contact_id  text        not null,
    note_added  boolean     not null default false,
    recorded_at timestamptz not null default now()
);
create index ghl_contacts_contact on ghl_contacts (contact_id);

create or replace view stored_crm_contacts as
select leadgen_id, adapter, crm_reference
from crm_deliveries
where crm_reference is not null
union all
select leadgen_id, 'gohighlevel', contact_id
from ghl_contacts;
