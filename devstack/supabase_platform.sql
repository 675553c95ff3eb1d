-- What a hosted Supabase project already has before its first migration runs, reduced to the
-- parts this project's migrations and the devstack stand-in rely on. Safe to run repeatedly:
-- every statement is idempotent, and the advisory lock keeps two bootstraps from racing.
-- `devstack/postgres.py::bootstrap_platform` runs this file in one transaction.

select pg_advisory_xact_lock(hashtext('devstack.supabase_platform'));

-- API roles. PostgREST switches to one of them per request (SET LOCAL ROLE), so grants and RLS
-- are enforced by PostgreSQL itself. NOINHERIT mirrors the platform; service_role bypasses RLS.
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;
alter role service_role bypassrls;

-- A non-superuser connection (DATABASE_URL pointing at a managed server) must be a member of
-- the API roles to SET ROLE to them; a superuser already can.
do $$
begin
  if not (select rolsuper from pg_roles where rolname = current_user) then
    execute format('grant anon, authenticated, service_role to %I', current_user);
  end if;
end
$$;

-- public: the exposed schema. Supabase grants the API roles everything on objects that the
-- migration role creates later (default privileges). That is why a migration that forgets
-- `enable row level security` / `revoke` leaks, and why tests can catch it. Deliberately no
-- `grant ... on all tables`: re-running this file after migrations must not undo their revokes.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;

-- extensions: migrations written for Supabase often say `create extension ... with schema extensions`.
create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;

-- auth: only the helper functions that RLS policies use. They read the per-request claims the
-- stand-in sets (`request.jwt.claims`), as on the platform.
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select auth.jwt() ->> 'role'
$$;

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select nullif(auth.jwt() ->> 'sub', '')::uuid
$$;

-- storage: bucket and object metadata. The bytes themselves live outside the database.
create schema if not exists storage;
grant usage on schema storage to anon, authenticated, service_role;

create table if not exists storage.buckets (
  id text primary key,
  name text not null unique,
  owner uuid,
  public boolean not null default false,
  file_size_limit bigint,
  allowed_mime_types text[],
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists storage.objects (
  id uuid primary key default gen_random_uuid(),
  bucket_id text references storage.buckets (id),
  name text,
  owner uuid,
  metadata jsonb,
  user_metadata jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_accessed_at timestamptz not null default now(),
  unique (bucket_id, name)
);

-- As on the platform: the API roles hold table grants, and RLS decides. No policies ship, so
-- only service_role (BYPASSRLS) can touch objects until a migration adds some.
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
grant all on storage.buckets to anon, authenticated, service_role;
grant all on storage.objects to anon, authenticated, service_role;

-- Path helpers that storage policies commonly call, e.g. `(storage.foldername(name))[1]`.
create or replace function storage.foldername(name text) returns text[]
language sql immutable
as $$
  select (string_to_array(name, '/'))[1:greatest(array_length(string_to_array(name, '/'), 1) - 1, 0)]
$$;

create or replace function storage.filename(name text) returns text
language sql immutable
as $$
  select (string_to_array(name, '/'))[array_length(string_to_array(name, '/'), 1)]
$$;

create or replace function storage.extension(name text) returns text
language sql immutable
as $$
  select case
    when storage.filename(name) like '%.%'
      then reverse(split_part(reverse(storage.filename(name)), '.', 1))
    else ''
  end
$$;
