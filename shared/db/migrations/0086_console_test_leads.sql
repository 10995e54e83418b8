-- console_leads gains is_test: the console and the daily report label test leads apart from organic and paid ones.
-- Same columns as 0020 in the same order, one added at the end (what CREATE OR REPLACE VIEW allows).
create or replace view console_leads as
select l.leadgen_id,
       l.created_time,
       l.fetched_at,
       l.source,
       l.page_id,
       l.form_id,
       l.campaign_id,
       l.adset_id,
       l.ad_id,
       coalesce(c.name, l.raw ->> 'campaign_name') as campaign_name,
       coalesce(s.name, l.raw ->> 'adset_name')    as adset_name,
       coalesce(a.name, l.raw ->> 'ad_name')       as ad_name,
       l.is_organic,
       l.platform,
       d.delivered_at,
       coalesce(d.attempts, 0) as crm_attempts,
       case
           when d.delivered then 'delivered'
           when d.failed then 'failed'
           when d.open or d.leadgen_id is null then 'waiting'
           else 'skipped'
       end as crm_status,
       -- Meta's Lead Ads Testing Tool makes organic leads whose answers are placeholders ("<test lead: dummy data
       -- for email>"): labelled apart from organic ones, never counted as paid.
       l.is_organic and exists (
           select 1 from jsonb_each_text(case when jsonb_typeof(l.fields) = 'object' then l.fields else '{}' end) f
           where f.value like '<test lead%'
       ) as is_test
from leads l
left join campaigns c on c.campaign_id = l.campaign_id
left join adsets s on s.adset_id = l.adset_id
left join ads a on a.ad_id = l.ad_id
left join lateral (
    select cd.leadgen_id,
           bool_or(cd.status = 'delivered')             as delivered,
           bool_or(cd.status = 'failed')                as failed,
           bool_or(cd.status in ('pending', 'retrying')) as open,
           min(cd.delivered_at)                          as delivered_at,
           sum(cd.attempts)::integer                     as attempts
    from crm_deliveries cd
    where cd.leadgen_id = l.leadgen_id
    group by cd.leadgen_id
) d on true;
