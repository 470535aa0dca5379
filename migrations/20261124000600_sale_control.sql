-- Waiting-room control: pause, outflow, runtime stock changes and early end of a running sale,
-- each audited; and the bookkeeping that makes every sale event go out exactly once.

alter table flash_sales
    -- Set while an admin holds the sale: entries still get tickets, nothing drains.
    add column paused_at timestamptz,
    -- Tickets per second the workers turn into orders, across all worker processes together;
    -- 0 = as fast as they can.
    add column outflow_per_sec integer not null default 0,
    -- Buyers who may wait for a unit to come back once the gate is empty; 0 = no waitlist.
    add column waitlist_limit integer not null default 0,
    -- The pre-queue opens this many seconds before starts_at; 0 = no pre-queue.
    add column prequeue_secs integer not null default 0,
    -- Bot friction: each entry must carry a proof of work of this many leading zero bits;
    -- 0 = none.
    add column pow_bits integer not null default 0,
    -- A queued ticket whose buyer has not polled for this many seconds is expired when the
    -- workers reach it, and its unit goes back (to the waitlist first); 0 = never.
    add column abandon_after_secs integer not null default 0,
    -- The seed of the pre-queue draw (chosen at the first attempt, so a retry draws the same
    -- order) and when the drawn pre-queue and the arrivals behind it were released.
    add column draw_seed bigint,
    add column released_at timestamptz,
    -- When the `started` and `ended` events were written to the outbox (once per sale).
    add column started_announced_at timestamptz,
    add column ended_announced_at timestamptz,
    add constraint flash_sales_outflow_per_sec_check check (outflow_per_sec >= 0),
    add constraint flash_sales_waitlist_limit_check check (waitlist_limit >= 0),
    add constraint flash_sales_prequeue_secs_check check (prequeue_secs >= 0 and prequeue_secs <= 86400),
    add constraint flash_sales_pow_bits_check check (pow_bits >= 0 and pow_bits <= 24),
    add constraint flash_sales_abandon_after_secs_check check (abandon_after_secs >= 0 and abandon_after_secs <= 86400);

-- The pre-queue draw of a sale, for audit: the order the pre-queued tickets were released in.
-- Replayable: sort the tickets by id and apply flash_core::prequeue::draw with the sale's seed.
create table prequeue_draws (
    flash_sale_id  uuid not null references flash_sales (flash_sale_id),
    position       integer not null,
    ticket_id      uuid not null,
    member_id      uuid not null,
    primary key (flash_sale_id, position),
    constraint prequeue_draws_ticket_key unique (flash_sale_id, ticket_id)
);

-- Sales that started or ended before events existed are not announced after the fact.
update flash_sales set started_announced_at = starts_at where starts_at <= now();
update flash_sales set ended_announced_at = ends_at where ends_at <= now() or cancelled_at is not null;

-- Who changed what on a running sale, and when. Written in the same transaction as the change.
create table flash_sale_audit (
    audit_id       uuid primary key,
    flash_sale_id  uuid not null references flash_sales (flash_sale_id),
    admin_id       uuid not null references members (member_id),
    action         text not null,
    -- The change itself, e.g. {"delta": 20} or {"from": 0, "to": 50}.
    detail         jsonb not null default '{}',
    at             timestamptz not null default now(),
    constraint flash_sale_audit_action_check check (action in (
        'paused', 'resumed', 'outflow_changed', 'stock_added', 'stock_withdrawn', 'ended'))
);
create index flash_sale_audit_sale_idx on flash_sale_audit (flash_sale_id, at, audit_id);
