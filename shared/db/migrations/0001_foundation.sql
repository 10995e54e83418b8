-- Idempotency: one row per (consumer, message id) handled, written in the handler's own transaction.
create table processed_messages (
    consumer     text        not null,
    message_id   text        not null,
    processed_at timestamptz not null default now(),
    primary key (consumer, message_id)
);
create index processed_messages_processed_at on processed_messages (processed_at);

-- Transactional outbox: messages written with the state change that caused them, relayed to the broker after
-- commit and marked published once the broker confirmed them.
create table outbox (
    id           bigint generated always as identity primary key,
    message_id   uuid        not null unique,
    routing_key  text        not null,
    message_type text        not null,
    body         jsonb       not null,
    created_at   timestamptz not null default now(),
    published_at timestamptz
);
create index outbox_unpublished on outbox (id) where published_at is null;
