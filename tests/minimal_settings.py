"""The fewest settings `load_settings` takes: everything else has a default (or, for a secret,
is looked up when first needed)."""

from __future__ import annotations

MINIMAL = {
    "COMPOSITE_URL": "https://composite-abc-uc.a.run.app",
    "SUPABASE_URL": "https://ref.supabase.co",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
}
