"""Everything `generate` and `composite` share: settings and secrets, the Supabase store, QStash
publishing and callbacks, the image frame, Twilio messaging, and the two halves of the
pipeline (`accept` for generate, `delivery` for composite), each decided by pure functions
(`acceptance_decisions`, `delivery_decisions`) and carried out by the effects modules.

`deploy.sh` copies this package into each function's folder, because each Cloud Function is
deployed from its own folder. Import the modules directly (`from shared.accept import ...`):
this file imports nothing, so `generate` never loads Pillow, which only `composite` needs.
Nothing here reads the environment or opens a connection at import time.
"""
