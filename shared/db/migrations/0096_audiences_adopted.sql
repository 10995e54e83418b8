-- campaign_executor's: an audience found at Meta by name (an earlier attempt created it, or someone else did) rather
-- than created by leadwire. Its members are unknown, so its first sync replaces them as a whole (/usersreplace).
alter table audiences add column adopted boolean not null default false;
