-- The leads table belongs to lead_fetcher, its only writer. Every other service reads leads through this view
-- (shared/leads.py: one `StoredLead`, one column list), so the table can change behind it. `names` carries the
-- ad, ad set, campaign and form names Meta sent with the lead (when it did), without the rest of `raw`.
create view stored_leads as
select leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform, fields,
       jsonb_strip_nulls(jsonb_build_object(
           'ad_name', raw -> 'ad_name', 'adset_name', raw -> 'adset_name',
           'campaign_name', raw -> 'campaign_name', 'form_name', raw -> 'form_name'
       )) as names
from leads;
