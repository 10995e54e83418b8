-- insights_adset_daily: insights_daily summed per ad set and day, kept by insights_poller's table itself (triggers
-- below), so whoever writes insights_daily (the poller's refreshes, an import, a test) keeps it exact. The console's
-- spend views read it instead of grouping 500 ads' rows per request (issue 18, item 5: Performance over 90 days
-- grouped 45,000 insights rows twice per page).
--
-- One row per (account, date, campaign, ad set, currency) that has insights rows; the names are the greatest of the
-- group's rows (what max() over insights_daily gave the views). A statement that writes insights_daily recomputes
-- the groups it touched from insights_daily, under a per-account transaction lock: two writers of one account
-- (the poller already serializes them) cannot leave a group computed from a snapshot without the other's rows.
create table insights_adset_daily (
    account_id    text   not null,
    date          date   not null,
    campaign_id   text   not null,
    adset_id      text   not null,
    currency      text   not null,
    campaign_name text,
    adset_name    text,
    spend_minor   bigint not null,
    impressions   bigint not null,
    clicks        bigint not null,
    leads         bigint not null,
    primary key (account_id, date, adset_id, campaign_id, currency)
);
create index insights_adset_daily_campaign_date on insights_adset_daily (campaign_id, date);

create function insights_adset_daily_recompute() returns trigger language plpgsql as $$
declare
    accounts text[];
    dates    date[];
    adsets   text[];
begin
    if tg_op = 'INSERT' then
        select array_agg(account_id), array_agg(date), array_agg(adset_id) into accounts, dates, adsets
        from (select distinct account_id, date, adset_id from new_rows) k;
    elsif tg_op = 'UPDATE' then
        select array_agg(account_id), array_agg(date), array_agg(adset_id) into accounts, dates, adsets
        from (select account_id, date, adset_id from new_rows
              union select account_id, date, adset_id from old_rows) k;
    else
        select array_agg(account_id), array_agg(date), array_agg(adset_id) into accounts, dates, adsets
        from (select distinct account_id, date, adset_id from old_rows) k;
    end if;
    if accounts is null then
        return null;
    end if;
    -- One lock per account (few), in a fixed order; the statements after it see what earlier holders committed.
    perform pg_advisory_xact_lock(hashtext('insights_adset_daily:' || a))
    from (select distinct a from unnest(accounts) a order by 1) x;
    delete from insights_adset_daily s
    using unnest(accounts, dates, adsets) k(account_id, date, adset_id)
    where s.account_id = k.account_id and s.date = k.date and s.adset_id = k.adset_id;
    insert into insights_adset_daily (account_id, date, campaign_id, adset_id, currency, campaign_name, adset_name,
                                      spend_minor, impressions, clicks, leads)
    select i.account_id, i.date, i.campaign_id, i.adset_id, i.currency, max(i.campaign_name), max(i.adset_name),
           sum(i.spend_minor), sum(i.impressions), sum(i.clicks), sum(i.leads)
    from insights_daily i
    join unnest(accounts, dates, adsets) k(account_id, date, adset_id)
      on i.account_id = k.account_id and i.date = k.date and i.adset_id = k.adset_id
    group by i.account_id, i.date, i.campaign_id, i.adset_id, i.currency;
    return null;
end
$$;

create function insights_adset_daily_truncated() returns trigger language plpgsql as $$
begin
    truncate insights_adset_daily;
    return null;
end
$$;

-- A trigger with transition tables has one event each.
create trigger insights_adset_daily_on_insert after insert on insights_daily
    referencing new table as new_rows for each statement execute function insights_adset_daily_recompute();
create trigger insights_adset_daily_on_update after update on insights_daily
    referencing old table as old_rows new table as new_rows
    for each statement execute function insights_adset_daily_recompute();
create trigger insights_adset_daily_on_delete after delete on insights_daily
    referencing old table as old_rows for each statement execute function insights_adset_daily_recompute();
create trigger insights_adset_daily_on_truncate after truncate on insights_daily
    for each statement execute function insights_adset_daily_truncated();

insert into insights_adset_daily (account_id, date, campaign_id, adset_id, currency, campaign_name, adset_name,
                                  spend_minor, impressions, clicks, leads)
select account_id, date, campaign_id, adset_id, currency, max(campaign_name), max(adset_name), sum(spend_minor),
       sum(impressions), sum(clicks), sum(leads)
from insights_daily
group by account_id, date, campaign_id, adset_id, currency;

-- The console's spend views (0020), same columns and values, now over the summary: per campaign and day...
create or replace view console_spend_daily as
select i.account_id, i.date, i.campaign_id,
       max(coalesce(c.name, i.campaign_name)) as campaign_name,
       i.currency, acc.currency_offset,
       sum(i.spend_minor)::bigint  as spend_minor,
       sum(i.impressions)::bigint  as impressions,
       sum(i.clicks)::bigint       as clicks,
       sum(i.leads)::bigint        as leads
from insights_adset_daily i
join ad_accounts acc on acc.account_id = i.account_id
left join campaigns c on c.campaign_id = i.campaign_id
group by i.account_id, i.date, i.campaign_id, i.currency, acc.currency_offset;

-- ...and per ad set and day: one summary row per row of the view (no grouping left).
create or replace view console_adset_spend_daily as
select i.account_id, i.date, i.campaign_id, i.adset_id,
       coalesce(c.name, i.campaign_name) as campaign_name,
       coalesce(s.name, i.adset_name)    as adset_name,
       i.currency, acc.currency_offset,
       i.spend_minor,
       i.impressions,
       i.clicks,
       i.leads
from insights_adset_daily i
join ad_accounts acc on acc.account_id = i.account_id
left join campaigns c on c.campaign_id = i.campaign_id
left join adsets s on s.adset_id = i.adset_id;
