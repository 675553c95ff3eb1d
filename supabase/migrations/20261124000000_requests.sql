-- One row per picture someone asked for, from the moment `generate` accepts it until it ends
-- `delivered` or `failed`. Only the server's secret key (role service_role) may touch it.

create type public.request_status as enum ('queued', 'composing', 'sending', 'delivered', 'failed');

-- Why a request failed, in the words the caller is told (see shared/replies.py).
create type public.failure_reason as enum (
  'publish_failed',  -- QStash would not take the job
  'refused',         -- the provider's safety system refused the prompt or the picture
  'provider_busy',   -- rate limited or overloaded on every attempt
  'provider_error',  -- the provider failed (5xx, timeouts, auth, quota)
  'bad_response',    -- the provider answered with something that is not a usable picture
  'undeliverable',   -- Twilio refused the message for good (bad number, media rejected)
  'opted_out',       -- the person replied STOP; Twilio error 21610
  'expired'          -- stuck past its deadline and finished by the sweep
);

create table public.requests (
  id uuid primary key default gen_random_uuid(),
  status public.request_status not null default 'queued',
  channel text not null default 'api' check (channel in ('api', 'voice', 'sms', 'whatsapp')),
  recipient text not null check (recipient ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  sender text not null check (sender ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  prompt text not null check (char_length(prompt) between 1 and 4000 and prompt = btrim(prompt)),
  model text not null,
  size text not null,
  quality text not null,
  -- Unguessable part of the picture's public URL; fixed per request so a retried upload
  -- overwrites the same object instead of leaving orphans.
  media_token text not null default replace(gen_random_uuid()::text, '-', ''),
  qstash_message_id text,
  attempts integer not null default 0 check (attempts >= 0),
  last_error text,
  -- The claim: whoever holds claim_token (until claimed_until) is the one callback allowed to
  -- compose and send. claim_owner is the QStash message id of the holder, so a redelivery of
  -- the same message can be told apart from a different, duplicate callback.
  claim_owner text,
  claim_token text,
  claimed_until timestamptz,
  image_path text,
  image_bytes integer check (image_bytes is null or image_bytes > 0),
  -- Set just before asking Twilio to send. A later run that finds it set without a
  -- message_sid must look the message up at Twilio before sending anything again.
  send_started_at timestamptz,
  message_sid text,
  failure_reason public.failure_reason,
  failure_detail text,
  notified boolean not null default false,
  input_tokens integer,
  output_image_tokens integer,
  timings jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  generated_at timestamptz,
  delivered_at timestamptz,
  failed_at timestamptz,
  constraint delivered_is_complete check (
    status <> 'delivered'
    or (message_sid is not null and delivered_at is not null and image_path is not null)
  ),
  constraint failed_has_reason check (
    status <> 'failed' or (failure_reason is not null and failed_at is not null)
  ),
  constraint claim_is_whole check ((claim_token is null) = (claimed_until is null)),
  constraint finished_is_unclaimed check (
    status not in ('delivered', 'failed') or claim_token is null
  )
);

comment on table public.requests is 'Picture requests; written only by the Cloud Functions.';

-- The sweep looks for unfinished requests by age; rate limits look by recipient.
create index requests_unfinished_idx on public.requests (created_at)
  where status not in ('delivered', 'failed');
create index requests_recipient_idx on public.requests (recipient, created_at desc);

create function public.touch_updated_at() returns trigger
language plpgsql set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

create trigger requests_touch before update on public.requests
  for each row execute function public.touch_updated_at();

-- Claim a request for one callback run. Returns {"outcome": ..., "token": ..., "request": row}:
--   claimed  the caller holds the claim now (token) and must finish or release it
--   taken    another callback holds a live claim: the caller must do nothing
--   busy     a redelivery of the holder's own message arrived while its claim is live: the
--            holder may have died, so the caller should ask to be retried later
--   done     the request already ended (delivered or failed)
--   missing  no such request
-- The row lock makes concurrent claims queue up, so exactly one of them gets `claimed`.
create function public.claim_request(p_request_id uuid, p_owner text, p_lease_seconds integer)
returns jsonb
language plpgsql set search_path = '' as $$
declare
  r public.requests;
  v_token text := gen_random_uuid()::text;
begin
  select * into r from public.requests where id = p_request_id for update;
  if not found then
    return jsonb_build_object('outcome', 'missing');
  end if;
  if r.status in ('delivered', 'failed') then
    return jsonb_build_object('outcome', 'done', 'request', to_jsonb(r));
  end if;
  if r.claim_token is not null and r.claimed_until > now() then
    return jsonb_build_object(
      'outcome', case when r.claim_owner = p_owner then 'busy' else 'taken' end,
      'request', to_jsonb(r));
  end if;
  update public.requests
     set claim_owner = p_owner,
         claim_token = v_token,
         claimed_until = now() + make_interval(secs => p_lease_seconds),
         status = case when status = 'queued' then 'composing'::public.request_status
                       else status end
   where id = p_request_id
  returning * into r;
  return jsonb_build_object('outcome', 'claimed', 'token', v_token, 'request', to_jsonb(r));
end;
$$;

-- Give a claim back after a failed run so the next retry can take it at once.
create function public.release_request(p_request_id uuid, p_token text, p_error text)
returns boolean
language sql set search_path = '' as $$
  with released as (
    update public.requests
       set claim_owner = null, claim_token = null, claimed_until = null,
           last_error = coalesce(p_error, last_error)
     where id = p_request_id and claim_token = p_token
    returning 1
  )
  select exists (select 1 from released);
$$;

-- Count a failed generation attempt that QStash will retry. Returns the new count, or null
-- when the request is unknown or already finished (a late or reordered callback).
create function public.record_attempt(
  p_request_id uuid, p_message_id text, p_error text
) returns integer
language sql set search_path = '' as $$
  update public.requests
     set attempts = attempts + 1,
         last_error = p_error,
         qstash_message_id = coalesce(qstash_message_id, p_message_id)
   where id = p_request_id and status not in ('delivered', 'failed')
  returning attempts;
$$;

alter table public.requests enable row level security;
-- No policies: the publishable (anon) key sees and writes nothing. Revoke as well, so a policy
-- added by mistake later still grants nothing through the public API.
revoke all on table public.requests from anon, authenticated;
grant all on table public.requests to service_role;

revoke execute on function public.claim_request(uuid, text, integer) from public, anon, authenticated;
revoke execute on function public.release_request(uuid, text, text) from public, anon, authenticated;
revoke execute on function public.record_attempt(uuid, text, text) from public, anon, authenticated;
revoke execute on function public.touch_updated_at() from public, anon, authenticated;
grant execute on function public.claim_request(uuid, text, integer) to service_role;
grant execute on function public.release_request(uuid, text, text) to service_role;
grant execute on function public.record_attempt(uuid, text, text) to service_role;

-- Pictures are public objects under unguessable paths, because Twilio must fetch the media URL
-- without credentials. Only JPEGs up to Twilio's 5 MB MMS limit are accepted.
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values ('pictures', 'pictures', true, 5242880, array['image/jpeg'])
on conflict (id) do update
  set public = excluded.public,
      file_size_limit = excluded.file_size_limit,
      allowed_mime_types = excluded.allowed_mime_types;
