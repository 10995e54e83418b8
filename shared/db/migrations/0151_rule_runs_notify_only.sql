-- Rules engine (services/rules_engine): which of a run's rules only notify. A notify-only rule (its only action is
-- `notify`, `Rule.notify_only`) changes nothing on Meta: it needs no consent and acts at once, so the console shows
-- it as on, with no Enable, and its decisions as notifications. Runs recorded before this migration name none.
alter table rule_runs add column notify_only text[] not null default '{}';  -- of `rules`, those that only notify

-- Console (services/console) read model: the runs with that column (added at the end, as a view's columns must be).
create or replace view console_rule_runs as
select run_id, trigger, accounts, started_at, finished_at, rules, rule_problems, entities, decisions, acted, counts,
       notify_only
from rule_runs;
