-- The envelope's message_id is the idempotency key of a delivery: a message id already recorded for one command
-- is never acted on again, whatever command_id it carries (services/campaign_executor/store.py `message_taken`).
create index campaign_commands_message_id on campaign_commands (message_id);
