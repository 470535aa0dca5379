-- Members and their login sessions (member-api owns these tables).

create table members (
    member_id         uuid primary key,
    -- Stored normalised (trimmed, lower-case) by the application, so the unique constraint
    -- makes one account per address; concurrent signups race here and exactly one wins.
    email             text not null,
    -- Argon2id PHC string: algorithm, parameters and salt travel with the hash, so parameters
    -- can be raised later without breaking existing logins.
    password_hash     text not null,
    name              text not null,
    role              text not null default 'buyer',
    email_verified_at timestamptz,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint members_email_key unique (email),
    constraint members_role_check check (role in ('buyer', 'admin')),
    constraint members_name_check check (length(name) between 1 and 100)
);
select trigger_updated_at('members');

-- Opaque refresh tokens, stored only as SHA-256 hashes. Each login starts a family; every
-- refresh uses up one token and issues the next in the same family. Presenting a used token
-- means it leaked, so the whole family is revoked.
create table refresh_tokens (
    token_hash  bytea primary key,
    family_id   uuid not null,
    member_id   uuid not null references members (member_id) on delete cascade,
    expires_at  timestamptz not null,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index refresh_tokens_family_id_idx on refresh_tokens (family_id);
create index refresh_tokens_member_id_idx on refresh_tokens (member_id);

-- One-time email verification tokens (hash only; the raw token travels in the email).
create table email_verifications (
    token_hash  bytea primary key,
    member_id   uuid not null references members (member_id) on delete cascade,
    expires_at  timestamptz not null,
    used_at     timestamptz,
    created_at  timestamptz not null default now()
);
create index email_verifications_member_id_idx on email_verifications (member_id);
