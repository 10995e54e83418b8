-- The send log takes thousands of rows a second, each inserted ('sending') and then updated once ('sent').
-- Only the primary key and the BRIN index on claimed_at are left: the 'sent' update changes no indexed column, and
-- with room kept free on every page (fillfactor) PostgreSQL writes it as a heap-only (HOT) update, with no new
-- index entries. Pruning finds old sent rows through claimed_at too (a row is sent minutes after its claim at most).
-- Nothing queried capi_events by batch_id; operators who trace a batch filter the few rows of one time range.
drop index capi_events_sent_at;
drop index capi_events_batch;
alter table capi_events set (fillfactor = 50);
