-- lead_cohort_facts: one narrow row per lead with what cohort counting needs (lead date, campaign, ad set, organic,
-- test) and the lower-cased names of its CRM outcomes, so the console's Performance page and Today's costs count a
-- window's leads and their qualified / signed ones from one index, without joining 20,000-35,000 leads to their
-- outcomes per request (issue 18, item 5).
--
-- Two halves, each kept by triggers on its owner's table, so any writer (the lead fetcher, the rules engine, an
-- import, a test) keeps it exact: the lead half (this migration, from lead_fetcher's `leads`) and the outcome half
-- (0117, from the rules engine's `rule_crm_outcomes`). Each trigger upserts only its own half by lead id: the
-- unique key orders a lead and its outcome written at once in two transactions, whichever commits first. A row
-- whose lead is not stored (an outcome first) has no lead half (created_time null) and is not counted.
-- One row per lead id, per day of its own time: exact in any time zone the console counts days in.
create table lead_cohort_facts (
    leadgen_id   text        primary key,
    created_time timestamptz,               -- null while the lead is not stored
    campaign_id  text,
    adset_id     text,
    is_organic   boolean,
    is_test      boolean,                   -- as console_leads.is_test (0086)
    outcomes     text[]      not null default '{}'  -- lower(event_name) of the lead's CRM outcomes, sorted
);
create index lead_cohort_facts_created on lead_cohort_facts (created_time)
    include (campaign_id, adset_id, is_organic, is_test, outcomes);
-- One campaign's ad sets (Performance's drill-down), and the leads with outcomes (its chart's signed per day).
create index lead_cohort_facts_campaign on lead_cohort_facts (campaign_id, created_time)
    include (adset_id, is_organic, is_test, outcomes);
create index lead_cohort_facts_with_outcomes on lead_cohort_facts (created_time) include (campaign_id, outcomes)
    where outcomes <> '{}';

create function lead_cohort_is_test(is_organic boolean, fields jsonb) returns boolean
language sql immutable as $$
    select is_organic and exists (
        select 1 from jsonb_each_text(case when jsonb_typeof(fields) = 'object' then fields else '{}' end) f
        where f.value like '<test lead%'
    )
$$;

create function lead_cohort_facts_leads() returns trigger language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        -- Leads gone (or renamed): their lead half is cleared; a row left with nothing is dropped.
        update lead_cohort_facts f
        set created_time = null, campaign_id = null, adset_id = null, is_organic = null, is_test = null
        from old_rows o
        where f.leadgen_id = o.leadgen_id
          and (tg_op = 'DELETE' or not exists (select 1 from leads l where l.leadgen_id = o.leadgen_id));
        delete from lead_cohort_facts f
        using old_rows o
        where f.leadgen_id = o.leadgen_id and f.created_time is null and f.outcomes = '{}';
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into lead_cohort_facts as f (leadgen_id, created_time, campaign_id, adset_id, is_organic, is_test)
        select n.leadgen_id, n.created_time, n.campaign_id, n.adset_id, n.is_organic,
               lead_cohort_is_test(n.is_organic, n.fields)
        from new_rows n
        on conflict (leadgen_id) do update set
            created_time = excluded.created_time, campaign_id = excluded.campaign_id, adset_id = excluded.adset_id,
            is_organic = excluded.is_organic, is_test = excluded.is_test
        where (f.created_time, f.campaign_id, f.adset_id, f.is_organic, f.is_test)
              is distinct from
              (excluded.created_time, excluded.campaign_id, excluded.adset_id, excluded.is_organic, excluded.is_test);
    end if;
    return null;
end
$$;

-- A trigger with transition tables has one event each.
create trigger lead_cohort_facts_on_insert after insert on leads
    referencing new table as new_rows for each statement execute function lead_cohort_facts_leads();
create trigger lead_cohort_facts_on_update after update on leads
    referencing old table as old_rows new table as new_rows
    for each statement execute function lead_cohort_facts_leads();
create trigger lead_cohort_facts_on_delete after delete on leads
    referencing old table as old_rows for each statement execute function lead_cohort_facts_leads();

create function lead_cohort_facts_leads_truncated() returns trigger language plpgsql as $$
begin
    delete from lead_cohort_facts where outcomes = '{}';
    update lead_cohort_facts
    set created_time = null, campaign_id = null, adset_id = null, is_organic = null, is_test = null;
    return null;
end
$$;

create trigger lead_cohort_facts_on_truncate after truncate on leads
    for each statement execute function lead_cohort_facts_leads_truncated();

insert into lead_cohort_facts (leadgen_id, created_time, campaign_id, adset_id, is_organic, is_test)
select leadgen_id, created_time, campaign_id, adset_id, is_organic, lead_cohort_is_test(is_organic, fields)
from leads;

-- The console's read model: stored leads with their outcomes' names (compare with lower-cased event names).
create view console_lead_cohorts as
select leadgen_id, created_time, campaign_id, adset_id, is_organic, is_test, outcomes
from lead_cohort_facts
where created_time is not null;
