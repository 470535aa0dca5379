-- The catalog (catalog-api owns it).

create table products (
    product_id   uuid primary key,
    sku          text not null,
    name         text not null,
    description  text not null default '',
    -- Money is integer minor units; never floats.
    price_cents  bigint not null,
    currency     text not null,
    -- INVARIANT: stock never < 0. Orders take stock with a guarded update; this is the backstop.
    stock        integer not null,
    -- Soft delete: an inactive product is not listed and cannot be ordered, but old orders
    -- still reference it.
    active       boolean not null default true,
    -- Bumped by every write (admin edits and stock changes alike). Row locks serialise writers,
    -- so it only grows; the Redis cache keeps the newest version it has seen and refuses to
    -- store an older one, so a slow reader can never put a stale product back.
    version      bigint not null default 1,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint products_sku_key unique (sku),
    constraint products_price_cents_check check (price_cents >= 0),
    constraint products_currency_check check (currency ~ '^[A-Z]{3}$'),
    constraint products_stock_check check (stock >= 0)
);
select trigger_updated_at('products');
create index products_active_created_idx on products (created_at, product_id) where active;
