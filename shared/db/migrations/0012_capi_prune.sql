-- capi_events rows only matter within Meta's 48 h dedupe window: the capi_sender prunes older ones hourly.
-- Sent rows are found through capi_events_sent_at; the others (rejected, failed, abandoned claims) by claimed_at.
-- BRIN: claimed_at grows with insertion order, so a block-range index finds old rows while costing next to
-- nothing on the claim path (thousands of inserts per second).
create index capi_events_claimed_at_brin on capi_events using brin (claimed_at);
