-- Login sessions that ended (a logout, or a refresh token presented twice), kept until the last
-- access token such a session may have minted has expired. The Redis denylist is a copy of this
-- table for speed: a Redis that lost its keys is refilled from here before it answers for any
-- token (`flash_core::auth::Denylist`), so no logout is undone by a Redis restart.
create table ended_sessions (
    session_id    uuid primary key,
    -- INVARIANT: no access token of the session is valid after this (its expiry plus leeway).
    denied_until  timestamptz not null
);
-- The refill reads the live rows; each new ending sweeps the expired ones.
create index ended_sessions_denied_until_idx on ended_sessions (denied_until);
