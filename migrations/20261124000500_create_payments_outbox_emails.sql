-- Payments, the transactional outbox, and sent email.

-- INVARIANT: one payment per order (no double charge); `idempotency_key` goes to the provider
-- so a retried charge is recognised on its side too.
create table payments (
    payment_id       uuid primary key,
    order_id         uuid not null references orders (order_id),
    idempotency_key  text not null,
    status           text not null default 'pending',
    amount_cents     bigint not null,
    currency         text not null,
    attempts         integer not null default 0,
    provider_ref     text,
    last_error       text,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint payments_order_id_key unique (order_id),
    constraint payments_idempotency_key_key unique (idempotency_key),
    constraint payments_status_check check (status in ('pending', 'succeeded', 'failed', 'refunded')),
    constraint payments_amount_cents_check check (amount_cents >= 0)
);
select trigger_updated_at('payments');

-- Jobs written in the same transaction as the state change that causes them; the relay in
-- workers publishes them to JetStream (Nats-Msg-Id = outbox_id, so a republish is dropped).
create table outbox (
    outbox_id     uuid primary key,
    -- Subject without the deployment prefix, e.g. 'jobs.payment', 'jobs.email'.
    subject       text not null,
    payload       jsonb not null,
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);
create index outbox_unpublished_idx on outbox (created_at) where published_at is null;

-- Wakes the relay the moment a job is committed (LISTEN outbox); it also polls, so a missed
-- notification only delays a job, never loses it.
create or replace function notify_outbox() returns trigger
language plpgsql as $$
begin
    perform pg_notify('outbox', '');
    return null;
end;
$$;

create trigger outbox_notify
    after insert on outbox
    for each statement execute function notify_outbox();

-- Every email the system sends. INVARIANT: each email_id is sent at most once.
create table emails (
    email_id    uuid primary key,
    member_id   uuid references members (member_id) on delete set null,
    to_address  text not null,
    kind        text not null,
    subject     text not null,
    status      text not null default 'pending',
    attempts    integer not null default 0,
    last_error  text,
    sent_at     timestamptz,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint emails_status_check check (status in ('pending', 'sent', 'dead'))
);
select trigger_updated_at('emails');
