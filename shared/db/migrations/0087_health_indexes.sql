-- The console's health strip and the daily report read console_health on every Today page: its newest webhook
-- lead and newest CRM delivery were scans of the whole tables (100 ms each on 100,000 leads). Indexes owned by
-- lead_fetcher (leads) and crm_sync (crm_deliveries), for their readers' views.
create index leads_source_fetched_at on leads (source, fetched_at);
create index crm_deliveries_delivered_at on crm_deliveries (delivered_at) where delivered_at is not null;
