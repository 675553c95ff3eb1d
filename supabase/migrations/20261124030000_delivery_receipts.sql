-- Delivery receipts: Twilio's status callbacks say how far each message really got. A
-- request is `delivered` once Twilio accepted the MMS; these columns tell whether the
-- handset got it (or why not), as Twilio reports it.

alter table public.requests
  add column handset_status text check (
    handset_status in ('queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'read')),
  add column handset_error_code integer,
  add column handset_updated_at timestamptz;

-- Record a status callback for a request's message. The callback names the request (it may
-- come before we have stored the message's SID) and the message; callbacks can arrive out of
-- order (`sent` after `delivered`), so a status only ever moves forward.
create function public.record_message_status(
  p_request_id uuid, p_message_sid text, p_status text, p_error_code integer
) returns boolean
language plpgsql set search_path = '' as $$
declare
  v_rank constant jsonb := '{"queued": 0, "sending": 1, "sent": 2, "delivered": 3,
                             "undelivered": 3, "failed": 3, "read": 4}';
begin
  if not v_rank ? p_status then
    return false;
  end if;
  update public.requests
     set handset_status = p_status,
         handset_error_code = p_error_code,
         handset_updated_at = now()
   where id = p_request_id
     and (message_sid is null or message_sid = p_message_sid)
     and coalesce((v_rank ->> handset_status)::int, -1) < (v_rank ->> p_status)::int;
  return found;
end;
$$;

revoke execute on function public.record_message_status(uuid, text, text, integer)
  from public, anon, authenticated;
grant execute on function public.record_message_status(uuid, text, text, integer) to service_role;
