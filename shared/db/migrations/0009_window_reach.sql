-- Deduplicated reach per ad set and campaign over whole windows, written by insights_poller, read by rules_engine.
--
-- Reach counts unique people, so summing daily reach (insights_daily) counts a person reached on three days three
-- times and understates frequency. Meta deduplicates only over the range and level asked (meta-api-facts §9.1), so
-- each refresh reads every configured window (INSIGHTS_REACH_WINDOWS) as one range per level and REPLACES the
-- account's rows here. Windows use the rules' vocabulary (`last_7_days` ends today, `previous_7_days` is Meta's
-- `last_7d`); date_since/date_until are the days, in the account's time zone, the numbers were read for: a reader
-- uses a row only while that range is still the window's range (a row read yesterday is not today's last_7_days).
create table insights_window_reach (
    account_id    text        not null references ad_accounts (account_id) on delete cascade,
    level         text        not null check (level in ('adset', 'campaign')),
    object_id     text        not null,                -- adset_id or campaign_id
    window_label  text        not null,                -- rules window: last_7_days, previous_7_days, last_3_days, ...
    date_since    date        not null,                -- first day of the range read (account time zone)
    date_until    date        not null,                -- last day of the range read, inclusive
    reach         bigint      not null,                -- unique people over the whole range, as Meta reports it
    impressions   bigint      not null,
    frequency     numeric,                             -- impressions / reach, as Meta reports it
    refreshed_at  timestamptz not null default now(),
    primary key (level, object_id, window_label)
);
create index insights_window_reach_account on insights_window_reach (account_id);
