-- crm_sync's: the CRM's own id for each lead's contact, as recorded when the lead was delivered, for the services
-- that tie a CRM outcome back to its lead (shared/leads.py `match_lead`). They read it here, never crm_deliveries.
create view stored_crm_contacts as
select leadgen_id, adapter, crm_reference
from crm_deliveries
where crm_reference is not null;
create index crm_deliveries_reference on crm_deliveries (crm_reference) where crm_reference is not null;
