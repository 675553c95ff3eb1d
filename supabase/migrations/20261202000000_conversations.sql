-- Conversations: a follow-up ("make it night", AGAIN, UNDO, a photo to restyle) is its own
-- request row, so limits, the budget, retention, the sweep and exactly-once apply unchanged.
-- `kind` says what it is, `parent_id` which picture it follows, and `source_path` the picture
-- in Storage an edit starts from (the parent's unframed original, or the person's photo).

alter table public.requests
  add column kind text not null default 'new'
    check (kind in ('new', 'again', 'refine', 'restyle', 'undo')),
  add column parent_id uuid references public.requests (id) on delete set null,
  add column source_path text check (source_path is null or source_path ~ '^[A-Za-z0-9/_.-]{1,200}$'),
  add constraint follow_up_has_parent check (kind in ('new', 'restyle') or parent_id is not null),
  add constraint edit_has_source check (kind not in ('refine', 'restyle') or source_path is not null);

-- "Their last picture": the newest delivered request between a person and our number.
create index requests_latest_delivered
  on public.requests (recipient, sender, delivered_at desc)
  where status = 'delivered';

-- A photo someone sent with no words: kept until they say what to do with it (one per pair).
create table public.pending_photos (
  address text not null check (address ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  sender text not null check (sender ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  path text not null check (path ~ '^[A-Za-z0-9/_.-]{1,200}$'),
  received_at timestamptz not null default now(),
  primary key (address, sender)
);
alter table public.pending_photos enable row level security;
revoke all on table public.pending_photos from anon, authenticated;
grant all on table public.pending_photos to service_role;

drop function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text);

-- As before, plus what kind of request it is and what it follows.
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
  p_source_path text default null
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
    caller_verdict, kind, parent_id, source_path)
  values (
    p_recipient, p_sender, p_prompt, p_channel, p_model, p_size, p_quality, p_source_ref,
    p_estimated_cost_usd, p_caller_verdict, p_kind, p_parent_id, p_source_path)
  returning * into r;
  return jsonb_build_object('outcome', 'created', 'request', to_jsonb(r));
exception when unique_violation then
  -- The same Twilio request, arriving twice at the same moment.
  select * into r from public.requests where source_ref = p_source_ref;
  return jsonb_build_object('outcome', 'duplicate', 'request', to_jsonb(r));
end;
$$;

revoke execute on function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text, text, uuid, text)
  from public, anon, authenticated;
grant execute on function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text, text, uuid, text)
  to service_role;
