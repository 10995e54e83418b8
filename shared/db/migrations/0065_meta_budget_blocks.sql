-- Meta's own count of budget changes (services/campaign_executor): when Meta answers a budget change with
-- 613/1487632 ("too many budget changes on this ad set", edits in Ads Manager included), it blocks the ad set's
-- budget changes for an hour. The executor records the block here and counts it as the hourly limit reached
-- (guardrail budget_changes_per_hour) until `blocked_until`, whatever its own audit log counts.
create table meta_budget_blocks (
    object_id     text        primary key,
    account_id    text,
    blocked_at    timestamptz not null default now(),
    blocked_until timestamptz not null,
    command_id    uuid                                  -- the command Meta refused
);
