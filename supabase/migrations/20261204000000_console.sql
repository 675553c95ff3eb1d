-- The operator console and the live wall: a switch that pauses the whole service, numbers the
-- operator blocked, pictures the operator hid from (or approved for) the wall, and the day's
-- figures computed here, over the real rows, so the console never counts rows in Python.

-- The service's one row of state, which the operator changes from the console. `id` is always
-- true, so there can only ever be one row. `paused_at` says since when (null while running).
-- How the wall chooses pictures (WALL=approve) is a setting, not state, and is not here.
create table public.service_state (
  id boolean primary key default true check (id),
  paused boolean not null default false,
  paused_at timestamptz
);
insert into public.service_state (id) values (true) on conflict (id) do nothing;

alter table public.service_state enable row level security;
-- No policies: the publishable (anon) key sees and writes nothing.
revoke all on table public.service_state from anon, authenticated;
grant select, insert, update on table public.service_state to service_role;

-- Numbers the operator blocked: they get no picture on any channel. A number is matched with
-- and without its `whatsapp:` prefix, so blocking +1555… also blocks whatsapp:+1555….
create table public.blocked_numbers (
  address text primary key check (address ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  blocked_at timestamptz not null default now(),
  note text check (note is null or char_length(note) <= 500)
);

alter table public.blocked_numbers enable row level security;
revoke all on table public.blocked_numbers from anon, authenticated;
grant select, insert, update, delete on table public.blocked_numbers to service_role;

-- The operator hid a picture (it shows on neither the wall nor the gallery), or approved it
-- for the wall (with WALL=approve the wall shows approved pictures only).
alter table public.requests
  add column hidden_at timestamptz,
  add column approved_at timestamptz;

-- What the wall asks for every few seconds: the newest shown pictures.
create index requests_wall_idx on public.requests (delivered_at desc)
  where status = 'delivered' and deleted_at is null and hidden_at is null and kind <> 'undo';

drop function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text, text, uuid, text);

-- As before, plus: while the service is paused, or for a blocked number, nothing is recorded
-- and the answer says why ("paused", "blocked"). A resend of a recorded request still finds it.
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

-- The console's figures for the last 24 hours, as one JSON object:
--   requests_per_hour   24 whole UTC hours, the current one last, [{"hour", "count"}], with
--                       the hours nobody asked in as 0
--   outcomes            {status: count} of the requests made in the last 24 hours
--   failure_reasons     {failure_reason: count} of those that failed
--   spend_today_usd     what the requests since midnight UTC cost (the real cost where known,
--                       else the estimate), leaving out those the budget check leaves out:
--                       never published, or refused by the provider
--   budget_usd          p_budget_usd, as given (null: no budget)
--   to_mms_seconds_p50/_p95  from asking to Twilio taking the MMS, over the delivered ones
--                       (null when none were delivered)
--   paused              whether the service is paused
--   recent              the latest 20 requests, newest first; the recipient masked as its first
--                       4 and last 2 characters (after any whatsapp: prefix), the prompt null
--                       once the person deleted the picture
create function public.console_stats(p_budget_usd numeric default null)
returns jsonb
language sql stable set search_path = '' as $$
  with day as (
    select r.status, r.failure_reason, r.created_at, r.delivered_at
      from public.requests r
     where r.created_at > now() - interval '24 hours'
  ),
  hours as (
    select generate_series(
             date_trunc('hour', now(), 'UTC') - interval '23 hours',
             date_trunc('hour', now(), 'UTC'),
             interval '1 hour') as hour
  ),
  per_hour as (
    select date_trunc('hour', r.created_at, 'UTC') as hour, count(*) as n
      from public.requests r
     where r.created_at >= date_trunc('hour', now(), 'UTC') - interval '23 hours'
     group by 1
  ),
  latest as (
    select r.*, regexp_replace(r.recipient, '^whatsapp:', '') as number
      from public.requests r
     order by r.created_at desc, r.id
     limit 20
  )
  select jsonb_build_object(
    'requests_per_hour', (
      select jsonb_agg(
               jsonb_build_object('hour', h.hour, 'count', coalesce(p.n, 0)) order by h.hour)
        from hours h left join per_hour p on p.hour = h.hour),
    'outcomes', (
      select coalesce(jsonb_object_agg(c.status, c.n), '{}'::jsonb)
        from (select d.status::text as status, count(*) as n from day d group by 1) c),
    'failure_reasons', (
      select coalesce(jsonb_object_agg(c.reason, c.n), '{}'::jsonb)
        from (select d.failure_reason::text as reason, count(*) as n
                from day d where d.failure_reason is not null group by 1) c),
    'spend_today_usd', (
      select coalesce(sum(coalesce(r.cost_usd, r.estimated_cost_usd)), 0)
        from public.requests r
       where r.created_at >= date_trunc('day', now(), 'UTC')
         and r.failure_reason is distinct from 'publish_failed'
         and r.failure_reason is distinct from 'refused'),
    'budget_usd', p_budget_usd,
    'to_mms_seconds_p50', (
      select round(percentile_cont(0.5) within group (
               order by extract(epoch from d.delivered_at - d.created_at)::float8)::numeric, 3)
        from day d where d.status = 'delivered'),
    'to_mms_seconds_p95', (
      select round(percentile_cont(0.95) within group (
               order by extract(epoch from d.delivered_at - d.created_at)::float8)::numeric, 3)
        from day d where d.status = 'delivered'),
    'paused', coalesce((select s.paused from public.service_state s where s.id), false),
    'recent', (
      select coalesce(jsonb_agg(jsonb_build_object(
               'id', l.id,
               'created_at', l.created_at,
               'kind', l.kind,
               'channel', l.channel,
               'status', l.status,
               'failure_reason', l.failure_reason,
               'prompt', case when l.deleted_at is null then l.prompt end,
               'deleted_at', l.deleted_at,
               'recipient',
                 case when l.recipient like 'whatsapp:%' then 'whatsapp:' else '' end
                 || left(l.number, 4) || repeat('•', greatest(length(l.number) - 6, 1))
                 || right(l.number, 2),
               'model', l.model,
               'message_sid', l.message_sid,
               'handset_status', l.handset_status,
               'hidden_at', l.hidden_at,
               'approved_at', l.approved_at,
               'generated_at', l.generated_at,
               'send_started_at', l.send_started_at,
               'delivered_at', l.delivered_at,
               'failed_at', l.failed_at
             ) order by l.created_at desc, l.id), '[]'::jsonb)
        from latest l)
  );
$$;

-- The live wall: delivered pictures nobody deleted or hid (and, when p_approved_only, that the
-- operator approved), delivered after p_since (null: any time), newest first, at most p_limit
-- (null: 50; never more than 500). An UNDO sent an earlier picture again, so it adds none.
-- Only what a screen in a public place may show: no phone number, no sender, no channel.
create function public.wall_pictures(
  p_since timestamptz, p_approved_only boolean, p_limit integer
) returns table (id uuid, prompt text, image_path text, delivered_at timestamptz)
language sql stable set search_path = '' as $$
  select r.id, r.prompt, r.image_path, r.delivered_at
    from public.requests r
   where r.status = 'delivered'
     and r.deleted_at is null
     and r.hidden_at is null
     and r.kind <> 'undo'
     and (p_since is null or r.delivered_at > p_since)
     and (not coalesce(p_approved_only, false) or r.approved_at is not null)
   order by r.delivered_at desc, r.id
   limit least(greatest(coalesce(p_limit, 50), 0), 500);
$$;

revoke execute on function public.console_stats(numeric) from public, anon, authenticated;
revoke execute on function public.wall_pictures(timestamptz, boolean, integer)
  from public, anon, authenticated;
grant execute on function public.console_stats(numeric) to service_role;
grant execute on function public.wall_pictures(timestamptz, boolean, integer) to service_role;
