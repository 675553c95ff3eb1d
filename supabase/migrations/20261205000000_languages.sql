-- Languages: every request remembers the language it was made in, so its caption and failure
-- notices (written later, by composite or the sweep) are in that language, and crash recovery
-- looks for them in it. A person's chosen language is kept per pair (them, our number): set by
-- the keyword they write (DIBUJA...), a command word, LANGUAGE <code>, or the call's menu.
-- Codes are the catalogues' file names (shared/languages/<code>.toml); a new language needs
-- no migration.

alter table public.requests
  add column language text not null default 'en' check (language ~ '^[a-z]{2,3}$');

create table public.person_languages (
  address text not null check (address ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  sender text not null check (sender ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  language text not null check (language ~ '^[a-z]{2,3}$'),
  chosen_at timestamptz not null default now(),
  primary key (address, sender)
);
alter table public.person_languages enable row level security;
-- No policies: the publishable (anon) key sees and writes nothing.
revoke all on table public.person_languages from anon, authenticated;
grant select, insert, update, delete on table public.person_languages to service_role;

drop function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text, text, uuid, text);

-- As before, plus the language the request was made in.
create function public.create_request(
  p_recipient text,
  p_sender text,
  p_prompt text,
  p_channel text,
  p_model text,
  p_size text,
  p_quality text,
  p_source_ref text default null,
  p_estimated_cost_usd numeric default 0,
  p_limits jsonb default '{}'::jsonb,
  p_caller_verdict text default null,
  p_kind text default 'new',
  p_parent_id uuid default null,
  p_source_path text default null,
  p_language text default 'en'
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  r public.requests;
  v_number text := regexp_replace(p_recipient, '^whatsapp:', '');
  v_limit numeric;
begin
  if p_source_ref is not null then
    select * into r from public.requests where source_ref = p_source_ref;
    if found then
      return jsonb_build_object('outcome', 'duplicate', 'request', to_jsonb(r));
    end if;
  end if;
  if coalesce((select s.paused from public.service_state s where s.id), false) then
    return jsonb_build_object('outcome', 'paused');
  end if;
  if exists (
    select 1 from public.blocked_numbers b
     where regexp_replace(b.address, '^whatsapp:', '') = v_number) then
    return jsonb_build_object('outcome', 'blocked');
  end if;
  if exists (select 1 from public.opt_outs where address = p_recipient and sender = p_sender) then
    return jsonb_build_object('outcome', 'opted_out');
  end if;
  if jsonb_array_length(coalesce(p_limits -> 'allowlist', '[]'::jsonb)) > 0
     and not (p_limits -> 'allowlist' ? v_number) then
    return jsonb_build_object('outcome', 'not_allowed');
  end if;

  -- One request at a time past this point: the counts below stay true until we insert.
  perform pg_advisory_xact_lock(hashtext('picture-line:create_request'));

  v_limit := (p_limits ->> 'per_number_hour')::numeric;
  if v_limit is not null and (
    select count(*) from public.requests
     where regexp_replace(recipient, '^whatsapp:', '') = v_number
       and created_at > now() - interval '1 hour'
       and failure_reason is distinct from 'publish_failed') >= v_limit then
    return jsonb_build_object('outcome', 'per_number_hour');
  end if;
  v_limit := (p_limits ->> 'per_number_day')::numeric;
  if v_limit is not null and (
    select count(*) from public.requests
     where regexp_replace(recipient, '^whatsapp:', '') = v_number
       and created_at > now() - interval '24 hours'
       and failure_reason is distinct from 'publish_failed') >= v_limit then
    return jsonb_build_object('outcome', 'per_number_day');
  end if;
  v_limit := (p_limits ->> 'global_day')::numeric;
  if v_limit is not null and (
    select count(*) from public.requests
     where created_at > now() - interval '24 hours'
       and failure_reason is distinct from 'publish_failed') >= v_limit then
    return jsonb_build_object('outcome', 'global_day');
  end if;
  v_limit := (p_limits ->> 'budget_usd')::numeric;
  if v_limit is not null and (
    select coalesce(sum(coalesce(cost_usd, estimated_cost_usd)), 0) from public.requests
     where created_at > now() - interval '24 hours'
       and failure_reason is distinct from 'publish_failed'
       and failure_reason is distinct from 'refused') + p_estimated_cost_usd > v_limit then
    return jsonb_build_object('outcome', 'budget');
  end if;

  insert into public.requests (
    recipient, sender, prompt, channel, model, size, quality, source_ref, estimated_cost_usd,
    caller_verdict, kind, parent_id, source_path, language)
  values (
    p_recipient, p_sender, p_prompt, p_channel, p_model, p_size, p_quality, p_source_ref,
    p_estimated_cost_usd, p_caller_verdict, p_kind, p_parent_id, p_source_path, p_language)
  returning * into r;
  return jsonb_build_object('outcome', 'created', 'request', to_jsonb(r));
exception when unique_violation then
  -- The same Twilio request, arriving twice at the same moment.
  select * into r from public.requests where source_ref = p_source_ref;
  return jsonb_build_object('outcome', 'duplicate', 'request', to_jsonb(r));
end;
$$;

revoke execute on function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text, text, uuid, text, text)
  from public, anon, authenticated;
grant execute on function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text, text, uuid, text, text)
  to service_role;


-- The doctor's view of the schema, as before, plus: this migration's version (its presence
-- proves at least this much), and RLS for every table that holds a phone number, a token or
-- the service's state, not only the first three.
create or replace function public.doctor_schema() returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_latest text;
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    execute 'select max(version) from supabase_migrations.schema_migrations' into v_latest;
  end if;
  return jsonb_build_object(
    'latest_migration', v_latest,
    'doctor_migration', '20261205000000',
    'rls', (
      select coalesce(jsonb_object_agg(c.relname, c.relrowsecurity), '{}'::jsonb)
        from pg_catalog.pg_class c
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'public' and c.relkind = 'r'
         and c.relname in ('requests', 'opt_outs', 'self_tests', 'pending_photos',
                           'gallery_links', 'service_state', 'blocked_numbers',
                           'person_languages')
    )
  );
end;
$$;
