-- Creative rotation (issue 20): the engine reads the rotations that activated an ad (rule_actions.reserve_id, 0125)
-- with its own recent mutations; this index finds them without scanning the actions.
create index rule_actions_reserve on rule_actions (reserve_id) where reserve_id is not null;
