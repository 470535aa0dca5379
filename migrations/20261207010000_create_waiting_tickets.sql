-- Tickets that wait without a unit: on a sale's waitlist, or in its pre-queue until the draw.
-- They hold no unit and no message in the queue, so Redis alone knew them; this is their
-- durable copy. The door writes a row before it answers 202 for one; the workers' reconciler
-- restores them into a Redis that lost the sale (same ids, same order); a row goes when its
-- ticket stops waiting (promoted, drawn into the queue, or told sold out at the end).
create table waiting_tickets (
    ticket_id      uuid primary key,
    flash_sale_id  uuid not null references flash_sales (flash_sale_id) on delete cascade,
    member_id      uuid not null,
    -- 'waitlisted' or 'prequeued', as the ticket's status in Redis.
    kind           text not null constraint waiting_tickets_kind_check
                       check (kind in ('waitlisted', 'prequeued')),
    -- The order they are restored in: when the door recorded them.
    entered_at     timestamptz not null default clock_timestamp()
);
create index waiting_tickets_sale_idx on waiting_tickets (flash_sale_id, kind, entered_at, ticket_id);
