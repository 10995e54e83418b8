-- The ad objects and insights tables belong to insights_poller, their only writer. Other services (the rules
-- engine) read them through these views, one per table, so the tables can change behind them. Plain views:
-- PostgreSQL inlines them into the reader's query (same plans, same indexes).
create view stored_ad_accounts as
select account_id, name, currency, currency_offset, timezone_name, account_status, objects_synced_at,
       last_refresh_at, last_refresh_since, last_refresh_until, last_full_refresh_at, updated_at
from ad_accounts;

create view stored_campaigns as
select campaign_id, account_id, name, objective, status, effective_status, daily_budget_minor,
       lifetime_budget_minor, bid_strategy, created_time, updated_time, listed, synced_at
from campaigns;

create view stored_adsets as
select adset_id, account_id, campaign_id, name, status, effective_status, daily_budget_minor, lifetime_budget_minor,
       bid_strategy, bid_amount_minor, optimization_goal, billing_event, created_time, updated_time, listed, synced_at
from adsets;

create view stored_ads as
select ad_id, account_id, campaign_id, adset_id, name, status, effective_status, created_time, updated_time, listed,
       synced_at
from ads;

create view stored_insights_daily as
select ad_id, date, account_id, campaign_id, adset_id, campaign_name, adset_name, ad_name, currency, spend_minor,
       impressions, reach, clicks, ctr, cpc, cpm, frequency, leads, cpl_minor, actions, action_values,
       cost_per_action_type, created_at, updated_at
from insights_daily;

create view stored_window_reach as
select account_id, level, object_id, window_label, date_since, date_until, reach, impressions, frequency,
       refreshed_at
from insights_window_reach;
