"""API keys: issue, verify (cached, HMAC only), scope and project checks, revoke."""
