"""Per-API-key rate limits shared by every replica through Redis."""
