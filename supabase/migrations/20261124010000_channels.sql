-- Requests from phones: Studio (voice and messaging), the inbound-message webhook, WhatsApp.

-- Twilio's id for what started the request (CallSid / MessageSid). Twilio and Studio may send
-- the same request twice; the second one must find the first instead of paying again.
alter table public.requests add column source_ref text;
create unique index requests_source_ref_key on public.requests (source_ref);

-- People who replied STOP (or whom Twilio refused with 21610), per number of ours: Twilio keeps
-- its block per sender, and so do we. Nothing is sent to an opted-out pair.
create table public.opt_outs (
  address text not null check (address ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  sender text not null check (sender ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  source text not null check (source in ('keyword', 'twilio_21610')),
  opted_out_at timestamptz not null default now(),
  primary key (address, sender)
);

comment on table public.opt_outs is 'Recipients who opted out of messages from one of our numbers.';

-- Record a new request unless the recipient opted out or Twilio already sent it to us.
-- Returns {"outcome": "created" | "duplicate" | "opted_out", "request": row}.
create function public.create_request(
  p_recipient text,
  p_sender text,
  p_prompt text,
  p_channel text,
  p_model text,
  p_size text,
  p_quality text,
  p_source_ref text default null
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  r public.requests;
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
  insert into public.requests (recipient, sender, prompt, channel, model, size, quality, source_ref)
  values (p_recipient, p_sender, p_prompt, p_channel, p_model, p_size, p_quality, p_source_ref)
  returning * into r;
  return jsonb_build_object('outcome', 'created', 'request', to_jsonb(r));
exception when unique_violation then
  -- The same Twilio request, arriving twice at the same moment.
  select * into r from public.requests where source_ref = p_source_ref;
  return jsonb_build_object('outcome', 'duplicate', 'request', to_jsonb(r));
end;
$$;

-- STOP adds the pair, START removes it. Returns whether anything changed.
create function public.set_opt_out(
  p_address text, p_sender text, p_opted_out boolean, p_source text
) returns boolean
language plpgsql set search_path = '' as $$
begin
  if p_opted_out then
    insert into public.opt_outs (address, sender, source) values (p_address, p_sender, p_source)
    on conflict (address, sender) do nothing;
  else
    delete from public.opt_outs where address = p_address and sender = p_sender;
  end if;
  return found;
end;
$$;

alter table public.opt_outs enable row level security;
revoke all on table public.opt_outs from anon, authenticated;
grant all on table public.opt_outs to service_role;

revoke execute on function public.create_request(text, text, text, text, text, text, text, text)
  from public, anon, authenticated;
revoke execute on function public.set_opt_out(text, text, boolean, text)
  from public, anon, authenticated;
grant execute on function public.create_request(text, text, text, text, text, text, text, text)
  to service_role;
grant execute on function public.set_opt_out(text, text, boolean, text) to service_role;
