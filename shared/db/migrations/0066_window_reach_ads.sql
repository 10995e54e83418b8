-- Window reach (0009) per ad too: rules at ad level compute frequency = impressions / reach over their window
-- from Meta's deduplicated reach of the ad, not from summed daily reach (which overstates unique reach).
alter table insights_window_reach drop constraint insights_window_reach_level_check;
alter table insights_window_reach add constraint insights_window_reach_level_check
    check (level in ('adset', 'campaign', 'ad'));
