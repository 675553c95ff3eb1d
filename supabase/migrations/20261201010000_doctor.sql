-- What `./deploy.sh doctor` (deploy/doctor.py) reads back through PostgREST, with the secret
-- key only: the result of its QStash self-test, and the facts about the schema that PostgREST
-- cannot show (which migrations are applied, whether row level security is on).

-- One row per self-test. `composite` writes it only after verifying the QStash signature of
-- the doctor's message {"picture_line": "self_test", "nonce": ...} (shared/self_test.py), so a
-- row means "the signature verified"; the doctor reads it, then deletes it.
create table public.self_tests (
  nonce text primary key check (nonce ~ '^[A-Za-z0-9_-]{16,64}$'),
  -- Whether the JWT's `sub` was COMPOSITE_URL with the `?self_test=` query (QStash's docs do
  -- not say which form it signs), and whether that query reached composite at all.
  sub_included_query boolean not null,
  query_arrived boolean not null,
  recorded_at timestamptz not null default now()
);

alter table public.self_tests enable row level security;
-- No policies: the publishable (anon) key sees and writes nothing.
revoke all on table public.self_tests from anon, authenticated;
grant select, insert, update, delete on table public.self_tests to service_role;

-- The latest migration version the Supabase CLI recorded (null when the migrations were
-- applied with psql, which records none), the version of this migration (so that its mere
-- presence proves at least this much), and whether RLS is on for the tables that hold
-- personal data. Security definer: service_role cannot read supabase_migrations or pg_class
-- through PostgREST, and this returns nothing but versions and booleans.
create function public.doctor_schema() returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_latest text;
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    execute 'select max(version) from supabase_migrations.schema_migrations' into v_latest;
  end if;
  return jsonb_build_object(
    'latest_migration', v_latest,
    'doctor_migration', '20261201010000',
    'rls', (
      select coalesce(jsonb_object_agg(c.relname, c.relrowsecurity), '{}'::jsonb)
        from pg_catalog.pg_class c
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'public' and c.relkind = 'r'
         and c.relname in ('requests', 'opt_outs', 'self_tests')
    )
  );
end;
$$;

revoke execute on function public.doctor_schema() from public, anon, authenticated;
grant execute on function public.doctor_schema() to service_role;
