"""The Twilio Studio flow (flow.json) and the builder that writes it from the catalogues."""
