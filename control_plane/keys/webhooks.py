"""Signed callbacks: each API key's webhook secret, the signature header, its check.

The scheme is Stripe's (https://docs.stripe.com/webhooks#verify-manually):
`X-Conch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, b"<t>." + body)>`.
The timestamp is signed with the body, so a captured request cannot be replayed
later than the receiver's tolerance, nor its body changed.

A key's secret is derived from the server's SECRET_KEY and the key's id, so nothing
more is stored; rotating SECRET_KEY changes every webhook secret (as it invalidates
every API key). A key reads its own: `GET /api/v1/keys/self/webhook-secret`, hex-encoded;
the HMAC key is the 32 bytes that hex text encodes.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from pydantic import BaseModel

SIGNATURE_HEADER = "X-Conch-Signature"
SCHEME = (
    "t=<unix seconds>,v1=<hex HMAC-SHA256(key=bytes.fromhex(webhook_secret), "
    "message=b'<t>.' + raw request body)>; refuse a t more than 5 minutes from now"
)
DEFAULT_TOLERANCE_S = 300


def webhook_secret(server_secret: bytes, key_id: int) -> bytes:
    return hmac.new(server_secret, b"conch-webhook:%d" % key_id, hashlib.sha256).digest()


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The X-Conch-Signature value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_signature(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """For receivers: whether `header` signs exactly `body` with `secret`, at a time
    within `tolerance_s` of `now` (either way: clocks drift). Several v1 values are
    accepted, one matching being enough (Stripe's rule, for a secret being rotated)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, timestamp, body)
    # Constant time: how much of a guess matched must not show in how long it took.
    return any(hmac.compare_digest(expected, s) for s in signatures if s.isascii())


class WebhookSecretRead(BaseModel):
    key_id: int
    webhook_secret: str
    signature_header: str = SIGNATURE_HEADER
    scheme: str = SCHEME
