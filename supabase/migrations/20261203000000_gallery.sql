-- A private gallery for each person: texting PICTURES gets a link with an unguessable token for
-- that person and our number; NEWLINK replaces it, and the old one stops working at once. The
-- token is derived from a server secret and the link's `generation` (shared/gallery_links.py),
-- and only its SHA-256 is stored, so the table alone opens no gallery.

create table public.gallery_links (
  address text not null check (address ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  sender text not null check (sender ~ '^(whatsapp:)?\+[1-9][0-9]{6,14}$'),
  generation integer not null default 0 check (generation >= 0),
  token_sha256 text not null unique check (token_sha256 ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  primary key (address, sender)
);
alter table public.gallery_links enable row level security;
revoke all on table public.gallery_links from anon, authenticated;
grant all on table public.gallery_links to service_role;

-- A picture its person deleted from the gallery: its files are gone and its prompt is
-- replaced; the row stays (without it, deleting would give back the hourly limit).
alter table public.requests add column deleted_at timestamptz;

-- When the handset never got the picture's MMS (Twilio reports it undelivered or failed), the
-- person is texted the gallery link instead, once: this says when.
alter table public.requests add column link_sent_at timestamptz;
