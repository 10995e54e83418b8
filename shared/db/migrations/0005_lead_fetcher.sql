-- Access alerts raised by the lead fetcher, one row per (Page, code): a lost permission raises one alert per
-- period for the Page, not one per lead, across processes and restarts.
create table lead_alerts (
    page_id   text        not null,
    code      text        not null,
    raised_at timestamptz not null default now(),
    primary key (page_id, code)
);
