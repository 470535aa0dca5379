-- Flash-sale definitions. `quantity_left` is the truth the Redis gate is armed from.

create table flash_sales (
    flash_sale_id     uuid primary key,
    product_id        uuid not null references products (product_id),
    price_cents       bigint not null,
    currency          text not null,
    -- Units reserved from the product's stock when the sale was created. Cancelling a sale
    -- returns the unsold units to the product and takes them off `quantity`.
    quantity          integer not null,
    -- INVARIANT: 0 <= quantity_left <= quantity, and at rest
    -- quantity_left + live orders of the sale = quantity.
    quantity_left     integer not null,
    per_member_limit  integer not null default 1,
    starts_at         timestamptz not null,
    ends_at           timestamptz not null,
    cancelled_at      timestamptz,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint flash_sales_price_cents_check check (price_cents >= 0),
    constraint flash_sales_currency_check check (currency ~ '^[A-Z]{3}$'),
    constraint flash_sales_quantity_check check (quantity > 0 or (cancelled_at is not null and quantity >= 0)),
    constraint flash_sales_quantity_left_check check (quantity_left >= 0 and quantity_left <= quantity),
    constraint flash_sales_per_member_limit_check check (per_member_limit >= 1),
    constraint flash_sales_window_check check (starts_at < ends_at)
);
select trigger_updated_at('flash_sales');
create index flash_sales_window_idx on flash_sales (starts_at, ends_at);
