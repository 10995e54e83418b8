-- Creative rotation (issue 20): a rule's rotate_creative action pauses an ad and activates a paused reserve ad of
-- its ad set. The reserve's id is kept with the action, so the engine's next run sees the reserve ACTIVE (and the
-- ad PAUSED) before the insights poller re-reads the ads; the ads rotations retired are found by the index.
alter table rule_actions add column reserve_id text;
create index rule_actions_rotations on rule_actions (entity_id) where kind = 'rotate_creative';
