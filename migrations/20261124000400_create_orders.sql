-- Orders, regular and flash, and the per-member limit of flash sales.

create table orders (
    order_id         uuid primary key,
    member_id        uuid not null references members (member_id),
    kind             text not null,
    status           text not null default 'pending_payment',
    total_cents      bigint not null,
    currency         text not null,
    flash_sale_id    uuid references flash_sales (flash_sale_id),
    -- The waiting-room ticket a flash order was made from. INVARIANT: one ticket, one order;
    -- a redelivered ticket message inserts nothing (`on conflict (ticket_id) do nothing`).
    ticket_id        uuid,
    -- Client-chosen key making a retried POST /orders return the first order.
    idempotency_key  text,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint orders_ticket_id_key unique (ticket_id),
    constraint orders_member_idempotency_key unique (member_id, idempotency_key),
    constraint orders_kind_check check (kind in ('regular', 'flash')),
    constraint orders_status_check check (status in ('pending_payment', 'paid', 'cancelled')),
    constraint orders_total_cents_check check (total_cents >= 0),
    -- A flash order names its sale and ticket; a regular order has neither.
    constraint orders_flash_fields_check check (
        (kind = 'flash' and flash_sale_id is not null and ticket_id is not null)
        or (kind = 'regular' and flash_sale_id is null and ticket_id is null))
);
select trigger_updated_at('orders');
create index orders_member_created_idx on orders (member_id, created_at desc, order_id);
create index orders_flash_sale_idx on orders (flash_sale_id) where flash_sale_id is not null;

create table order_items (
    order_id          uuid not null references orders (order_id) on delete cascade,
    product_id        uuid not null references products (product_id),
    quantity          integer not null,
    -- Price at the time of ordering, read from the database, never from the client.
    unit_price_cents  bigint not null,
    primary key (order_id, product_id),
    constraint order_items_quantity_check check (quantity > 0),
    constraint order_items_unit_price_cents_check check (unit_price_cents >= 0)
);

-- Whether an order still holds its units (a cancelled one gave them back).
create or replace function order_is_live(status text) returns boolean
language sql immutable as $$ select status <> 'cancelled' $$;

-- Live flash orders per member and sale, kept by a trigger on orders. The limit is copied
-- from the sale so that a plain CHECK constraint can enforce it: INVARIANT at most
-- per_member_limit live orders per member per sale, whatever code inserts the order.
create table flash_sale_entitlements (
    flash_sale_id     uuid not null references flash_sales (flash_sale_id),
    member_id         uuid not null references members (member_id),
    per_member_limit  integer not null,
    live_orders       integer not null,
    primary key (flash_sale_id, member_id),
    constraint flash_sale_entitlements_limit_check
        check (live_orders >= 0 and live_orders <= per_member_limit)
);

create or replace function count_flash_entitlements() returns trigger
language plpgsql as $$
declare
    delta integer := 0;
begin
    if new.kind <> 'flash' then
        return new;
    end if;
    if tg_op = 'INSERT' then
        if order_is_live(new.status) then
            delta := 1;
        end if;
    elsif order_is_live(old.status) and not order_is_live(new.status) then
        delta := -1;
    elsif not order_is_live(old.status) and order_is_live(new.status) then
        delta := 1;
    end if;
    if delta > 0 then
        insert into flash_sale_entitlements (flash_sale_id, member_id, per_member_limit, live_orders)
        select new.flash_sale_id, new.member_id, s.per_member_limit, 1
        from flash_sales s where s.flash_sale_id = new.flash_sale_id
        on conflict (flash_sale_id, member_id)
        do update set live_orders = flash_sale_entitlements.live_orders + 1;
    elsif delta < 0 then
        -- A plain update: an insert proposing -1 would fail the CHECK before the conflict.
        update flash_sale_entitlements set live_orders = live_orders - 1
        where flash_sale_id = new.flash_sale_id and member_id = new.member_id;
    end if;
    return new;
end;
$$;

create trigger orders_count_flash_entitlements
    after insert or update of status on orders
    for each row execute function count_flash_entitlements();
