-- Ads insights and the object graph they describe, written by insights_poller, read by rules_engine and reports.
--
-- Money: every *_minor column is an integer in the account currency's minor unit, using Meta's currency offset
-- (100 for USD/EUR/GBP/..., 1 for CLP COP CRC HUF ISK IDR JPY KRW PYG TWD VND; meta-api-facts §11.1). Always read
-- it together with the row's currency (ad_accounts.currency / insights_daily.currency).
-- Dates: insights dates are calendar days in the ad account's time zone (ad_accounts.timezone_name), as Meta
-- reports them (meta-api-facts §9.1).

-- One row per configured ad account.
create table ad_accounts (
    account_id            text primary key,            -- act_<digits>
    name                  text,
    currency              text        not null,        -- ISO 4217, e.g. USD
    currency_offset       integer     not null,        -- minor units per major unit: 100 (USD) or 1 (JPY, ...)
    timezone_name         text        not null,        -- IANA zone the insights dates are in
    account_status        integer,                     -- Meta's account_status (1 = active)
    objects_synced_at     timestamptz,                 -- last complete sync of campaigns / ad sets / ads
    last_refresh_at       timestamptz,                 -- last successful insights refresh (any window)
    last_refresh_since    date,                        -- ...and the window it covered
    last_refresh_until    date,
    last_full_refresh_at  timestamptz,                 -- last refresh covering INSIGHTS_FULL_DAYS (28-day restatement)
    updated_at            timestamptz not null default now()
);

-- Campaigns, ad sets and ads as Meta lists them. Meta's list edges omit DELETED and ARCHIVED objects by default,
-- so an object the last complete sync of its account did not list gets listed = false (its other columns keep
-- their last known values).
create table campaigns (
    campaign_id       text primary key,
    account_id        text        not null references ad_accounts (account_id),
    name              text        not null,
    objective         text,                            -- OUTCOME_LEADS, ...
    status            text,                            -- configured status: ACTIVE PAUSED DELETED ARCHIVED
    effective_status  text,                            -- Meta's effective_status (meta-api-facts §11.2)
    daily_budget_minor    bigint,                      -- campaign budget (CBO), minor units; null when none
    lifetime_budget_minor bigint,
    bid_strategy      text,
    created_time      timestamptz,
    updated_time      timestamptz,
    listed            boolean     not null default true,
    synced_at         timestamptz not null default now()
);
create index campaigns_account on campaigns (account_id);

create table adsets (
    adset_id          text primary key,
    account_id        text        not null references ad_accounts (account_id),
    campaign_id       text        not null,
    name              text        not null,
    status            text,
    effective_status  text,                            -- includes CAMPAIGN_PAUSED
    daily_budget_minor    bigint,                      -- ad set budget, minor units; null under a campaign budget
    lifetime_budget_minor bigint,
    bid_strategy      text,
    bid_amount_minor  bigint,
    optimization_goal text,
    billing_event     text,
    created_time      timestamptz,
    updated_time      timestamptz,
    listed            boolean     not null default true,
    synced_at         timestamptz not null default now()
);
create index adsets_account on adsets (account_id);
create index adsets_campaign on adsets (campaign_id);

create table ads (
    ad_id             text primary key,
    account_id        text        not null references ad_accounts (account_id),
    campaign_id       text        not null,
    adset_id          text        not null,
    name              text        not null,
    status            text,
    effective_status  text,                            -- includes ADSET_PAUSED, PENDING_REVIEW, DISAPPROVED, ...
    created_time      timestamptz,
    updated_time      timestamptz,
    listed            boolean     not null default true,
    synced_at         timestamptz not null default now()
);
create index ads_account on ads (account_id);
create index ads_adset on ads (adset_id);

-- Daily insights, one row per ad per day (level=ad, time_increment=1, Meta's default attribution).
-- A refresh REPLACES the rows of its account and date window: upsert on (ad_id, date), and rows Meta no longer
-- returns for that window are deleted (Meta omits objects without delivery, so "no row" means "no delivery").
-- Numbers keep changing for up to 28 days (meta-api-facts §9.5); updated_at says when a row last changed.
-- Sums over ads/days: spend_minor, impressions, clicks, leads, actions are additive; reach, frequency, ctr, cpc,
-- cpm are not (recompute ratios from sums, e.g. CPL = sum(spend_minor) / sum(leads)).
create table insights_daily (
    ad_id             text        not null,
    date              date        not null,            -- day in the account's time zone (Meta's date_start)
    account_id        text        not null references ad_accounts (account_id),
    campaign_id       text        not null,
    adset_id          text        not null,
    campaign_name     text,                            -- names as of the insights row (objects may be renamed)
    adset_name        text,
    ad_name           text,
    currency          text        not null,            -- account_currency of the row
    spend_minor       bigint      not null,            -- spend in minor units (Meta reports "12.34" major units)
    impressions       bigint      not null default 0,
    reach             bigint      not null default 0,  -- unique people that day (not additive across days)
    clicks            bigint      not null default 0,
    ctr               numeric,                         -- % clicks/impressions, as Meta reports it
    cpc               numeric,                         -- cost per click in MAJOR units, as Meta reports it
    cpm               numeric,                         -- cost per 1000 impressions in MAJOR units, as Meta reports it
    frequency         numeric,                         -- impressions / reach
    leads             integer     not null default 0,  -- leads, from services/insights_poller/logic.py LEAD rules
    cpl_minor         numeric generated always as
                          (case when leads > 0 then spend_minor::numeric / leads end) stored,
    actions           jsonb       not null default '{}',  -- {action_type: count} as Meta reports them
    action_values     jsonb       not null default '{}',  -- {action_type: value in minor units}
    cost_per_action_type jsonb    not null default '{}',  -- {action_type: cost in MAJOR units}, as Meta reports it
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(), -- last time any number of this row changed
    primary key (ad_id, date)
);
create index insights_daily_account_date on insights_daily (account_id, date);
create index insights_daily_campaign_date on insights_daily (campaign_id, date);
create index insights_daily_adset_date on insights_daily (adset_id, date);
