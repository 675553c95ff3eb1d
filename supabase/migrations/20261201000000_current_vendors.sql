-- Today's vendors (December 2026): two new ways a request can fail, what each picture really
-- cost, and the size of the full-resolution original kept beside the framed MMS picture.

alter type public.failure_reason add value if not exists 'model_unavailable';  -- the model is gone
alter type public.failure_reason add value if not exists 'too_large';  -- cut at QStash's limit

-- What the request cost (picture + MMS), from the provider's token counts; null until the
-- answer arrives. The daily budget counts it in place of the estimate once it is known.
alter table public.requests
  add column cost_usd numeric(10, 4) check (cost_usd is null or cost_usd >= 0),
  add column original_bytes integer check (original_bytes is null or original_bytes > 0),
  -- A call's SHAKEN/STIR verdict (Twilio's StirVerstat), e.g. TN-Validation-Passed-A.
  add column caller_verdict text check (
    caller_verdict is null or caller_verdict ~ '^[A-Za-z][A-Za-z-]{0,63}$'
  );

drop function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb);

-- As before, plus the caller's verdict, and the budget sums real costs where known.
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
  p_caller_verdict text default null
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
    caller_verdict)
  values (
    p_recipient, p_sender, p_prompt, p_channel, p_model, p_size, p_quality, p_source_ref,
    p_estimated_cost_usd, p_caller_verdict)
  returning * into r;
  return jsonb_build_object('outcome', 'created', 'request', to_jsonb(r));
exception when unique_violation then
  -- The same Twilio request, arriving twice at the same moment.
  select * into r from public.requests where source_ref = p_source_ref;
  return jsonb_build_object('outcome', 'duplicate', 'request', to_jsonb(r));
end;
$$;

revoke execute on function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text)
  from public, anon, authenticated;
grant execute on function public.create_request(
  text, text, text, text, text, text, text, text, numeric, jsonb, text) to service_role;
