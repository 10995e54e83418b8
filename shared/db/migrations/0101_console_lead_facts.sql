-- console_lead_facts: the columns of console_leads that counting needs (where a lead came from, when, organic or
-- test), without the CRM delivery state. console_leads joins each lead to an aggregate of its crm_deliveries rows
-- (a LATERAL subquery the planner cannot drop even when no CRM column is read): the Today cohort counts and the
-- Performance page read 20,000-35,000 leads per window and paid one index probe per lead for nothing (issue 18,
-- item 5). Same leads, same values as console_leads (its CRM join never adds or removes a row).
create view console_lead_facts as
select l.leadgen_id,
       l.created_time,
       l.campaign_id,
       l.adset_id,
       l.ad_id,
       l.is_organic,
       -- as console_leads.is_test (migration 0086)
       l.is_organic and exists (
           select 1 from jsonb_each_text(case when jsonb_typeof(l.fields) = 'object' then l.fields else '{}' end) f
           where f.value like '<test lead%'
       ) as is_test
from leads l;
