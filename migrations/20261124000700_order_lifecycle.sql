-- The order lifecycle after payment (fulfilment and returns), its history, and carts.
--
--   pending_payment → paid → preparing → shipped → delivered → return_requested → returned
--   pending_payment | paid | preparing → cancelled
--
-- No state is entered twice, so the history's (order_id, status) key proves that no order was
-- advanced twice, whatever number of worker processes run the fulfilment scheduler. Every order
-- starts `pending_payment` at `created_at`; the history records the changes after that (no
-- extra row per order on the flash drain's insert path).

alter table orders drop constraint orders_status_check;
alter table orders add constraint orders_status_check check (status in (
    'pending_payment', 'paid', 'preparing', 'shipped', 'delivered',
    'return_requested', 'returned', 'cancelled'));

-- When the status last changed: the scheduler moves an order on once its step's delay passed.
alter table orders add column status_changed_at timestamptz not null default now();
-- The carrier's reference, from the moment the order is shipped.
alter table orders add column tracking_ref text;

-- A returned order gave its units back, as a cancelled one did.
create or replace function order_is_live(status text) returns boolean
language sql immutable as $$ select status not in ('cancelled', 'returned') $$;

create table order_history (
    history_id  bigint generated always as identity primary key,
    order_id    uuid not null references orders (order_id) on delete cascade,
    status      text not null,
    at          timestamptz not null default now(),
    constraint order_history_order_status_key unique (order_id, status)
);

-- Orders that already moved on keep where they are as their history.
insert into order_history (order_id, status, at)
select order_id, status, updated_at from orders where status <> 'pending_payment';

create or replace function stamp_order_status() returns trigger
language plpgsql as $$
begin
    new.status_changed_at := now();
    return new;
end;
$$;

create trigger orders_stamp_status
    before update of status on orders
    for each row when (old.status is distinct from new.status)
    execute function stamp_order_status();

create or replace function record_order_status() returns trigger
language plpgsql as $$
begin
    insert into order_history (order_id, status, at) values (new.order_id, new.status, now());
    return null;
end;
$$;

create trigger orders_record_status
    after update of status on orders
    for each row when (old.status is distinct from new.status)
    execute function record_order_status();

-- What the scheduler looks for: orders waiting for their next step, oldest first.
create index orders_fulfilment_idx on orders (status, status_changed_at)
    where status in ('paid', 'preparing', 'shipped', 'return_requested');

-- A member's cart: what they mean to buy, priced and checked only at checkout.
create table cart_items (
    member_id   uuid not null references members (member_id) on delete cascade,
    product_id  uuid not null references products (product_id) on delete cascade,
    quantity    integer not null,
    added_at    timestamptz not null default now(),
    primary key (member_id, product_id),
    constraint cart_items_quantity_check check (quantity between 1 and 1000)
);
