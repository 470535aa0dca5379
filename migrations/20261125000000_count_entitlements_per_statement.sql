-- The flash drain inserts a whole batch of orders in one statement. Counting entitlements with
-- a row trigger ran PL/pgSQL and an upsert per order, and the upsert checked two foreign keys
-- per order: together about half of the batch's time in the database. Now:
--
-- * inserted orders are counted once per statement, from its transition table, with one upsert
--   per (sale, member);
-- * a status change still counts per row, but only calls the function when the order gains or
--   loses its units (payment, fulfilment and most updates no longer call it at all);
-- * the entitlements' own foreign keys go: their rows are written only from orders rows, whose
--   member and sale are already checked by the orders table's keys, and orders are never
--   deleted, so the two checks per order proved nothing new.
--
-- INVARIANT (unchanged): at most per_member_limit live orders per member per sale; the CHECK on
-- flash_sale_entitlements fails the whole statement, and so the whole batch, that would break it.

drop trigger orders_count_flash_entitlements on orders;

alter table flash_sale_entitlements drop constraint flash_sale_entitlements_flash_sale_id_fkey;
alter table flash_sale_entitlements drop constraint flash_sale_entitlements_member_id_fkey;

create or replace function count_inserted_flash_entitlements() returns trigger
language plpgsql as $$
begin
    insert into flash_sale_entitlements (flash_sale_id, member_id, per_member_limit, live_orders)
    select n.flash_sale_id, n.member_id, s.per_member_limit, count(*)
    from inserted_orders n
    join flash_sales s on s.flash_sale_id = n.flash_sale_id
    where n.kind = 'flash' and order_is_live(n.status)
    group by n.flash_sale_id, n.member_id, s.per_member_limit
    on conflict (flash_sale_id, member_id)
    do update set live_orders = flash_sale_entitlements.live_orders + excluded.live_orders;
    return null;
end;
$$;

create trigger orders_count_inserted_flash_entitlements
    after insert on orders
    referencing new table as inserted_orders
    for each statement execute function count_inserted_flash_entitlements();

-- Now only called for a flash order whose status change gives or takes its units (the trigger's
-- WHEN says so), so it only has to tell which way.
create or replace function count_flash_entitlements() returns trigger
language plpgsql as $$
begin
    if order_is_live(new.status) then
        insert into flash_sale_entitlements (flash_sale_id, member_id, per_member_limit, live_orders)
        select new.flash_sale_id, new.member_id, s.per_member_limit, 1
        from flash_sales s where s.flash_sale_id = new.flash_sale_id
        on conflict (flash_sale_id, member_id)
        do update set live_orders = flash_sale_entitlements.live_orders + 1;
    else
        -- A plain update: an insert proposing -1 would fail the CHECK before the conflict.
        update flash_sale_entitlements set live_orders = live_orders - 1
        where flash_sale_id = new.flash_sale_id and member_id = new.member_id;
    end if;
    return new;
end;
$$;

create trigger orders_count_flash_entitlements
    after update of status on orders
    for each row
    when (new.kind = 'flash' and order_is_live(old.status) <> order_is_live(new.status))
    execute function count_flash_entitlements();
