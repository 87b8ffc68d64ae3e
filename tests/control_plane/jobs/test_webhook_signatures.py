"""X-Conch-Signature: what a receiver's check accepts and what it refuses."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from control_plane.keys.webhooks import sign, verify_signature, webhook_secret

SECRET = webhook_secret(b"server secret", 42)
BODY = b'{"task_id": "t-1", "status": "completed"}'
SENT_AT = 1_700_000_000


def _flip_last(header: str) -> str:
    return header[:-1] + ("1" if header.endswith("0") else "0")


def test_a_fresh_signature_of_the_body_verifies() -> None:
    header = sign(SECRET, BODY, SENT_AT)
    assert header.startswith(f"t={SENT_AT},v1=")
    assert verify_signature(SECRET, header, BODY, now=SENT_AT + 299)
    assert verify_signature(SECRET, header, BODY, now=SENT_AT - 299)  # the sender's clock ahead


def test_the_scheme_is_what_the_route_documents() -> None:
    """Anyone can check it with hmac alone: key = the secret's bytes, message = t.body."""
    expected = hmac.new(SECRET, b"%d." % SENT_AT + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, SENT_AT) == f"t={SENT_AT},v1={expected}"


def test_a_replayed_signature_is_refused_once_stale() -> None:
    header = sign(SECRET, BODY, SENT_AT)
    assert not verify_signature(SECRET, header, BODY, now=SENT_AT + 301)
    assert not verify_signature(SECRET, header, BODY, now=SENT_AT + 3600, tolerance_s=600)
    assert not verify_signature(SECRET, header, BODY, now=SENT_AT - 301)


@pytest.mark.parametrize(
    "header",
    [
        sign(SECRET, BODY + b" ", SENT_AT),  # signs another body
        sign(webhook_secret(b"server secret", 43), BODY, SENT_AT),  # another key's secret
        sign(webhook_secret(b"other server", 42), BODY, SENT_AT),  # another server's
        sign(SECRET, BODY, SENT_AT).replace(f"t={SENT_AT}", f"t={SENT_AT + 1}"),  # moved time
        _flip_last(sign(SECRET, BODY, SENT_AT)),
        "",
        "garbage",
        f"t={SENT_AT}",
        "v1=" + "0" * 64,
        f"t=abc,v1={'0' * 64}",
        f"t={SENT_AT},v1=é",  # not ASCII: refused, not an exception
    ],
)
def test_a_tampered_or_malformed_signature_is_refused(header: str) -> None:
    assert not verify_signature(SECRET, header, BODY, now=SENT_AT)


def test_one_matching_v1_among_several_is_enough() -> None:
    valid = sign(SECRET, BODY, SENT_AT).split(",")[1]
    header = f"t={SENT_AT}, v1={'0' * 64}, {valid}"
    assert verify_signature(SECRET, header, BODY, now=SENT_AT)


def test_each_key_has_its_own_secret() -> None:
    assert webhook_secret(b"s", 1) == webhook_secret(b"s", 1)
    assert len({webhook_secret(b"s", 1), webhook_secret(b"s", 2), webhook_secret(b"t", 1)}) == 3
    assert len(webhook_secret(b"s", 1)) == 32
