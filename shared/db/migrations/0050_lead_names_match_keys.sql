-- lead_fetcher's: each lead keeps its form's name (Meta's Lead node has campaign, ad set and ad names, which the
-- read now asks for and `raw` holds; the form's name comes from the form node) and two match keys, so a CRM outcome
-- carrying only an e-mail or a phone finds its lead (shared/leads.py `match_lead`). The keys are SHA-256 of the
-- normalized e-mail and phone (shared/meta/customer_data.py), the same hashes Meta receives: a CRM that sends them
-- hashed matches too.
alter table leads
    add column form_name text,
    add column email_key text,
    add column phone_key text;
create index leads_email_key on leads (email_key) where email_key is not null;
create index leads_phone_key on leads (phone_key) where phone_key is not null;

-- Leads stored before: the e-mail key as normalize_email makes it (trim, lowercase); the phone key only for Meta's
-- usual international form (+ and digits), which normalize_phone turns into its digits.
update leads set email_key = encode(sha256(convert_to(lower(btrim(coalesce(fields ->> 'email', fields ->> 'work_email'))),
                                                  'UTF8')), 'hex')
where coalesce(fields ->> 'email', fields ->> 'work_email') like '%@%.%';
update leads set phone_key = encode(sha256(convert_to(regexp_replace(fields ->> 'phone_number', '\D', '', 'g'),
                                                  'UTF8')), 'hex')
where fields ->> 'phone_number' ~ '^\+[0-9 ().-]{7,}$';

-- The view others read: names fall back to the object graph insights_poller keeps when Meta's answer lacked them;
-- the match keys are added at the end (existing readers name their columns).
create or replace view stored_leads as
select l.leadgen_id, l.page_id, l.form_id, l.ad_id, l.adset_id, l.campaign_id, l.created_time, l.is_organic,
       l.platform, l.fields,
       jsonb_strip_nulls(jsonb_build_object(
           'ad_name', coalesce(l.raw -> 'ad_name', to_jsonb((select a.name from stored_ads a where a.ad_id = l.ad_id))),
           'adset_name', coalesce(l.raw -> 'adset_name',
                                  to_jsonb((select s.name from stored_adsets s where s.adset_id = l.adset_id))),
           'campaign_name', coalesce(l.raw -> 'campaign_name',
                                     to_jsonb((select c.name from stored_campaigns c
                                               where c.campaign_id = l.campaign_id))),
           'form_name', coalesce(l.raw -> 'form_name', to_jsonb(l.form_name))
       )) as names,
       l.email_key, l.phone_key
from leads l;
