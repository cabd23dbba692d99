"""Infobip WhatsApp: the HTTP client, error parsing, and a local sandbox that answers like Infobip."""
