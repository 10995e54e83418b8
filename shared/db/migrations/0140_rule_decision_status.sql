-- Rules engine (services/rules_engine): each decision's console status stored with it, and decisions counted per
-- rule, hour and status, both kept by triggers on the engine's own tables (issue 18, item 5: the Automation page
-- worked out the status of ~17,000 decisions per request for its 7-day counts, and of every decision until a page
-- was full when filtering for a rare status).
--
-- `rule_decisions.status` is what `console_rule_decisions` computed per row (0060): from the decision's outcome,
-- reason and shadow flag and the result of its action (rule_actions of the same run, rule and object, not notify).
-- Whoever writes either table (the engine's store, a test, an import) keeps it exact: a decision's status is set
-- when it is written, and again for its decisions when an action is written, its result recorded or removed.
-- A decision with several such actions takes the one that failed first, then one waiting for its result, then
-- one applied (0060 took any one of them; the engine records at most one per decision and object today).

create function rule_decision_status(outcome text, reason text, shadow boolean, result_status text,
                                     has_action boolean) returns text language sql immutable as $$
    select case
        when outcome = 'acted' and result_status = 'ok' then 'acted'
        when outcome = 'acted' and result_status in ('failed', 'refused') then 'failed'
        when outcome = 'acted' and has_action then 'sent'
        when outcome = 'acted' then 'acted'
        when outcome = 'would_act' and shadow then 'shadow'
        when outcome = 'would_act' then 'dry_run'
        when reason in ('not_matched', 'insufficient_data', 'no_change') then 'skipped'
        else 'held'
    end
$$;

-- The action a decision's status and the console's action columns are read from (ordered as said above).
create function rule_decision_action(p_run_id uuid, p_rule text, p_entity_id text) returns setof rule_actions
language sql stable as $$
    select ra.* from rule_actions ra
    where ra.run_id = p_run_id and ra.rule = p_rule and ra.entity_id = p_entity_id and ra.kind <> 'notify'
    order by case when ra.result_status in ('failed', 'refused') then 0 when ra.result_status = 'ok' then 2 else 1 end,
             ra.acted_at, ra.command_id
    limit 1
$$;

alter table rule_decisions add column status text;

create function rule_decision_set_status() returns trigger language plpgsql as $$
declare
    action rule_actions;
begin
    if new.outcome = 'acted' then  -- only acted decisions have actions that count
        select * into action from rule_decision_action(new.run_id, new.rule, new.entity_id);
    end if;
    new.status := rule_decision_status(new.outcome, new.reason, new.shadow, action.result_status,
                                       action.command_id is not null);
    return new;
end
$$;

create trigger rule_decisions_status before insert or update on rule_decisions
    for each row execute function rule_decision_set_status();

-- An action written, its result recorded or the action removed: its decisions again (the trigger above works out
-- the status of the rows written here; only those whose status changes are written).
create function rule_decisions_restatus(p_run_id uuid[], p_rule text[], p_entity_id text[]) returns void
language sql as $$
    update rule_decisions d set status = d.status
    from (select distinct run_id, rule, entity_id from unnest(p_run_id, p_rule, p_entity_id) k(run_id, rule, entity_id)) k
    where d.run_id = k.run_id and d.rule = k.rule and d.entity_id = k.entity_id and d.outcome = 'acted'
      and d.status is distinct from (
          select rule_decision_status(d.outcome, d.reason, d.shadow, a.result_status, a.command_id is not null)
          from (select 1) one left join rule_decision_action(d.run_id, d.rule, d.entity_id) a on true);
$$;

create function rule_actions_written() returns trigger language plpgsql as $$
begin
    perform rule_decisions_restatus(array_agg(run_id), array_agg(rule), array_agg(entity_id)) from new_rows;
    return null;
end
$$;

create function rule_actions_changed() returns trigger language plpgsql as $$
begin
    perform rule_decisions_restatus(array_agg(run_id), array_agg(rule), array_agg(entity_id))
    from (select run_id, rule, entity_id from new_rows union select run_id, rule, entity_id from old_rows) k;
    return null;
end
$$;

create function rule_actions_removed() returns trigger language plpgsql as $$
begin
    perform rule_decisions_restatus(array_agg(run_id), array_agg(rule), array_agg(entity_id)) from old_rows;
    return null;
end
$$;

-- A trigger with transition tables has one event each.
create trigger rule_actions_restatus_insert after insert on rule_actions
    referencing new table as new_rows for each statement execute function rule_actions_written();
create trigger rule_actions_restatus_update after update on rule_actions
    referencing old table as old_rows new table as new_rows
    for each statement execute function rule_actions_changed();
create trigger rule_actions_restatus_delete after delete on rule_actions
    referencing old table as old_rows for each statement execute function rule_actions_removed();

update rule_decisions set status = '';  -- the trigger above works out every stored decision's status
alter table rule_decisions alter column status set not null;

-- The Automation page's lists: newest first, by status (a rare one is found without reading the others), by rule.
create index rule_decisions_status_time on rule_decisions (status, evaluated_at desc, id desc);
create index rule_decisions_rule_time on rule_decisions (rule, evaluated_at desc, id desc);
create index rule_decisions_time_id on rule_decisions (evaluated_at desc, id desc);
drop index rule_decisions_evaluated_at;  -- (evaluated_at) alone: the index above serves its range reads too

-- Decisions per rule, UTC hour and status. Each insert adds its decision, each statement that updates or deletes
-- decisions adds what it added and takes away what it removed (increments commute: concurrent writers leave it
-- exact; two writers upsert their keys in one order, so they do not deadlock).
create table rule_decision_hours (
    rule       text        not null,
    hour       timestamptz not null,
    status     text        not null,
    decisions  bigint      not null,
    primary key (rule, hour, status)
);
create index rule_decision_hours_hour on rule_decision_hours (hour);

create function rule_decision_hours_add(p_rule text[], p_hour timestamptz[], p_status text[], p_n bigint[])
returns void language sql as $$
    insert into rule_decision_hours as h (rule, hour, status, decisions)
    select rule, hour, status, sum(n) from unnest(p_rule, p_hour, p_status, p_n) k(rule, hour, status, n)
    group by rule, hour, status having sum(n) <> 0
    order by rule, hour, status  -- one order for every writer: no deadlock between two of them
    on conflict (rule, hour, status) do update set decisions = h.decisions + excluded.decisions;
    delete from rule_decision_hours h using unnest(p_rule, p_hour, p_status, p_n) k(rule, hour, status, n)
    where k.n < 0 and h.rule = k.rule and h.hour = k.hour and h.status = k.status and h.decisions = 0;
$$;

-- A row trigger for inserts: the engine writes its decisions one statement each (executemany), and a statement
-- trigger's transition table and arrays cost ~0.3 ms per statement (a run of 100 decisions: +30 ms, against +3 ms).
create function rule_decision_hours_on_insert() returns trigger language plpgsql as $$
begin
    insert into rule_decision_hours as h (rule, hour, status, decisions)
    values (new.rule, date_trunc('hour', new.evaluated_at, 'UTC'), new.status, 1)
    on conflict (rule, hour, status) do update set decisions = h.decisions + 1;
    return null;
end
$$;

create function rule_decision_hours_on_update() returns trigger language plpgsql as $$
begin
    perform rule_decision_hours_add(array_agg(rule), array_agg(hour), array_agg(status), array_agg(n))
    from (select rule, hour, status, sum(n) as n
          from (select rule, date_trunc('hour', evaluated_at, 'UTC') as hour, status, 1 as n from new_rows
                union all
                select rule, date_trunc('hour', evaluated_at, 'UTC'), status, -1 from old_rows) c
          group by 1, 2, 3 having sum(n) <> 0) k
    having count(*) > 0;
    return null;
end
$$;

create function rule_decision_hours_on_delete() returns trigger language plpgsql as $$
begin
    perform rule_decision_hours_add(array_agg(rule), array_agg(hour), array_agg(status), array_agg(-n))
    from (select rule, date_trunc('hour', evaluated_at, 'UTC') as hour, status, count(*) as n
          from old_rows group by 1, 2, 3) k
    having count(*) > 0;
    return null;
end
$$;

create function rule_decision_hours_truncated() returns trigger language plpgsql as $$
begin
    truncate rule_decision_hours;
    return null;
end
$$;

create trigger rule_decision_hours_insert after insert on rule_decisions
    for each row execute function rule_decision_hours_on_insert();
create trigger rule_decision_hours_update after update on rule_decisions
    referencing old table as old_rows new table as new_rows
    for each statement execute function rule_decision_hours_on_update();
create trigger rule_decision_hours_delete after delete on rule_decisions
    referencing old table as old_rows for each statement execute function rule_decision_hours_on_delete();
create trigger rule_decision_hours_truncate after truncate on rule_decisions
    for each statement execute function rule_decision_hours_truncated();

insert into rule_decision_hours (rule, hour, status, decisions)
select rule, date_trunc('hour', evaluated_at, 'UTC'), status, count(*) from rule_decisions group by 1, 2, 3;

-- Console (services/console) read models.

-- The decision list reads the stored status; the action columns come from the same action the status does.
create or replace view console_rule_decisions as
select d.id, d.run_id, d.evaluated_at, d.rule, d.entity_id, d.entity_level, d.entity_name, d.account_id,
       d.currency, d.outcome, d.reason, d.capped, d.shadow, d.metrics, d.explanation,
       a.kind as action_kind, a.command_id, a.result_status, a.result_detail, a.result_guardrail, a.result_at,
       a.announced_at,
       d.status,
       v.verdict, v.reviewed_by, v.reviewed_at, v.result as review_result
from rule_decisions d
left join lateral rule_decision_action(d.run_id, d.rule, d.entity_id) a on true
left join rule_decision_reviews v on v.decision_id = d.id;

-- Each rule's decisions since `since` by status, and its last decision then: whole hours from rule_decision_hours,
-- the part of the first hour from the decisions themselves.
create function console_rule_decision_counts(since timestamptz)
returns table (rule text, status text, decisions bigint, last_decision timestamptz)
language sql stable as $$
    with edge as (select date_trunc('hour', since, 'UTC') + interval '1 hour' as hour),
    counted as (
        select h.rule, h.status, h.decisions from rule_decision_hours h, edge where h.hour >= edge.hour
        union all
        select d.rule, d.status, 1 from rule_decisions d, edge where d.evaluated_at > since and d.evaluated_at < edge.hour
    ), totals as (
        select c.rule, c.status, sum(c.decisions)::bigint as decisions from counted c group by c.rule, c.status
    )
    select t.rule, t.status, t.decisions, l.last_decision
    from totals t
    cross join lateral (select max(d.evaluated_at) as last_decision from rule_decisions d
                        where d.rule = t.rule and d.evaluated_at > since) l
$$;
