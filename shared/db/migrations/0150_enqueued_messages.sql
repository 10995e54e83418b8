-- shared/'s (shared/outbox.py): which messages are in the outbox, published or not, for a service that must know
-- whether it enqueued one already (lead_fetcher: a lead's LeadCaptured, asked in the same query as the lead). A
-- plain view: the planner inlines it, so a lookup by message_id uses the outbox's unique index as before.
create view enqueued_messages as
select message_id, published_at
from outbox;
