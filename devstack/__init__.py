"""Local stand-ins for QStash, OpenAI, Supabase, Twilio and Secret Manager.

Each stand-in is a small Flask app that speaks its vendor's wire protocol (paths, headers, JSON,
status codes, signatures) closely enough that the vendor's own SDK talks to it unchanged. They
exist so the production code can run end to end on a laptop with no network and no accounts.
Nothing here is imported by `shared/`, `generate/` or `composite/`.
"""
