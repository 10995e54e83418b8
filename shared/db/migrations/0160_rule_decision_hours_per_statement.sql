-- Rules engine (services/rules_engine): `rule_decision_hours` counts a statement's inserted decisions once per
-- statement instead of once per row (0140 counted each row as it was inserted).
--
-- The engine now writes a run's decisions in one statement (`record_decisions`), and a run at agency scale has
-- ~39,000 of them, ~30,000 for one rule and status in one hour: the row trigger updated that one counter row
-- ~30,000 times in the run's transaction, each update walking the versions the earlier ones left (none can be
-- pruned before the transaction ends), so writing the run took 5.7 s instead of ~1 s
-- (`tests/benchmarks/bench_rules_snapshot.py`). Counted per statement from its transition table, each counter row is
-- written once. The counts stay exact for every writer; one that inserts decisions one statement each (the engine's
-- few announced shadow decisions, a test) pays ~0.3 ms per statement for the transition table (0140's comment).

create function rule_decision_hours_on_insert_rows() returns trigger language plpgsql as $$
begin
    perform rule_decision_hours_add(array_agg(rule), array_agg(hour), array_agg(status), array_agg(n))
    from (select rule, date_trunc('hour', evaluated_at, 'UTC') as hour, status, count(*) as n
          from new_rows group by 1, 2, 3) k
    having count(*) > 0;
    return null;
end
$$;

drop trigger rule_decision_hours_insert on rule_decisions;
drop function rule_decision_hours_on_insert();
create trigger rule_decision_hours_insert after insert on rule_decisions
    referencing new table as new_rows for each statement execute function rule_decision_hours_on_insert_rows();
