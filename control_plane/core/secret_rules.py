"""When a SECRET_KEY is good enough, and when the development key may be used.

SECRET_KEY is the HMAC key that every stored API-key hash depends on: whoever
knows it can test guessed tokens offline. The built-in development key is
public (it is in this repository), so it is accepted only where nobody else can
reach the server: CONCH_ENVIRONMENT=development on a loopback address. Anywhere
else the key must look random. Length alone proves nothing ("a" * 32), so the
rule also estimates its entropy and refuses patterns and placeholder words.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from itertools import pairwise

MIN_LENGTH = 32
MIN_DISTINCT = 8
# Length x Shannon entropy of the character frequencies. Of 200,000 keys of 32
# random hex digits (`openssl rand -hex 16`, 128 bits) the lowest scored 92.
MIN_ESTIMATED_BITS = 80
# A run this long of one character or of consecutive characters ("12345678"):
# fewer than one random hex key in a million has one.
MAX_RUN = 8
# Words that mark a value someone typed instead of generating (compared after
# lowercasing and dropping everything but letters and digits).
PLACEHOLDER_WORDS = (
    "changeme", "password", "passw0rd", "secret", "placeholder", "example", "default",
    "insecure", "donotuse", "qwerty", "letmein", "conch",
)  # fmt: skip

GENERATE_HINT = """python -c 'import secrets; print(secrets.token_urlsafe(32))'"""
RULE = (
    f"{MIN_LENGTH}+ characters, {MIN_DISTINCT}+ distinct, {MIN_ESTIMATED_BITS}+ bits of "
    "estimated entropy, no repeated pattern, no run like 'aaaaaaaa' or '12345678', "
    "no placeholder word like 'changeme'"
)


def is_loopback(host: str) -> bool:
    """Only the loopback interface: 127.0.0.0/8, ::1 or the name localhost."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def estimated_bits(secret: str) -> float:
    counts = Counter(secret)
    total = len(secret)
    return -total * sum(n / total * math.log2(n / total) for n in counts.values())


def weakness(secret: str) -> str | None:
    """Why `secret` is not good enough as a production SECRET_KEY; None when it is."""
    if len(secret) < MIN_LENGTH:
        return f"it has {len(secret)} characters"
    if len(set(secret)) < MIN_DISTINCT:
        return f"it uses only {len(set(secret))} distinct characters"
    if _repeats_a_pattern(secret):
        return "it repeats a shorter pattern"
    if _longest_run(secret) >= MAX_RUN:
        return "it contains a run of repeated or consecutive characters"
    letters = "".join(c for c in secret.lower() if c.isalnum())
    word = next((w for w in PLACEHOLDER_WORDS if w in letters), None)
    if word is not None:
        return f"it contains the placeholder word {word!r}"
    if estimated_bits(secret) < MIN_ESTIMATED_BITS:
        return f"its estimated entropy is {estimated_bits(secret):.0f} bits"
    return None


def _repeats_a_pattern(secret: str) -> bool:
    # A string is a repetition of a shorter one iff it occurs inside itself doubled
    # at an offset shorter than its length.
    return (secret + secret).find(secret, 1) < len(secret)


def _longest_run(secret: str) -> int:
    """Longest stretch stepping by the same -1, 0 or +1 each character ('aaaa', '1234')."""
    longest = run = 1
    step: int | None = None
    for previous, current in pairwise(secret):
        difference = ord(current) - ord(previous)
        if abs(difference) > 1:
            run, step = 1, None
        elif difference == step:
            run += 1
        else:
            run, step = 2, difference
        longest = max(longest, run)
    return longest
