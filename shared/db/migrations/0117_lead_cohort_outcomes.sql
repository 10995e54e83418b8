-- The outcome half of lead_cohort_facts (0116), kept by triggers on the rules engine's rule_crm_outcomes: each
-- lead's lower-cased outcome names (rule_crm_outcomes keeps one row per lead and lower(event_name)). Upserts by
-- lead id change the row as it is when the statement gets it, so concurrent outcomes of one lead all stay.
create function lead_cohort_outcomes_added(current text[], added text[]) returns text[]
language sql immutable as $$
    select coalesce(array_agg(distinct e order by e), '{}') from unnest(current || added) e
$$;

create function lead_cohort_outcomes_removed(current text[], removed text[]) returns text[]
language sql immutable as $$
    select coalesce(array_agg(e order by e), '{}') from unnest(current) e where e <> all (removed)
$$;

create function lead_cohort_facts_outcomes() returns trigger language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update lead_cohort_facts f
        set outcomes = lead_cohort_outcomes_removed(f.outcomes, o.names)
        from (select lead_id, array_agg(lower(event_name)) as names from old_rows group by lead_id) o
        where f.leadgen_id = o.lead_id;
        delete from lead_cohort_facts f
        using old_rows o
        where f.leadgen_id = o.lead_id and f.created_time is null and f.outcomes = '{}';
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        insert into lead_cohort_facts as f (leadgen_id, outcomes)
        select lead_id, lead_cohort_outcomes_added('{}', array_agg(lower(event_name)))
        from new_rows
        group by lead_id
        on conflict (leadgen_id) do update set outcomes = lead_cohort_outcomes_added(f.outcomes, excluded.outcomes);
    end if;
    return null;
end
$$;

create trigger lead_cohort_facts_on_insert after insert on rule_crm_outcomes
    referencing new table as new_rows for each statement execute function lead_cohort_facts_outcomes();
create trigger lead_cohort_facts_on_update after update on rule_crm_outcomes
    referencing old table as old_rows new table as new_rows
    for each statement execute function lead_cohort_facts_outcomes();
create trigger lead_cohort_facts_on_delete after delete on rule_crm_outcomes
    referencing old table as old_rows for each statement execute function lead_cohort_facts_outcomes();

create function lead_cohort_facts_outcomes_truncated() returns trigger language plpgsql as $$
begin
    delete from lead_cohort_facts where created_time is null;
    update lead_cohort_facts set outcomes = '{}' where outcomes <> '{}';
    return null;
end
$$;

create trigger lead_cohort_facts_on_truncate after truncate on rule_crm_outcomes
    for each statement execute function lead_cohort_facts_outcomes_truncated();

insert into lead_cohort_facts as f (leadgen_id, outcomes)
select lead_id, lead_cohort_outcomes_added('{}', array_agg(lower(event_name)))
from rule_crm_outcomes
group by lead_id
on conflict (leadgen_id) do update set outcomes = excluded.outcomes;
