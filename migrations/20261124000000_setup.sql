-- Helpers every later migration uses.

-- Keeps `updated_at` honest without every UPDATE having to remember it.
create or replace function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at = now();
    return new;
end;
$$;

-- Attaches set_updated_at() to a table: `select trigger_updated_at('members');`
create or replace function trigger_updated_at(tablename regclass) returns void
language plpgsql as $$
begin
    execute format(
        'create trigger set_updated_at before update on %s
         for each row when (old is distinct from new) execute function set_updated_at();',
        tablename);
end;
$$;
