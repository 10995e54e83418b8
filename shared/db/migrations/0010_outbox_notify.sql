-- Wake the outbox relays from the insert itself: one round trip less for every message a service enqueues.
create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('leadwire_outbox', '');
    return null;
end
$$;
create trigger outbox_notify after insert on outbox for each statement execute function outbox_notify();
