"""Token format: `conch_` + 32 base62 chars (~190 random bits) + 6-char CRC32 checksum.

The checksum lets a typo or a foreign string be refused without a database
round trip; only HMAC-SHA256(secret_key, token) is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib

PREFIX = "conch_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LENGTH = 32
_CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH
# One regular expression, not a loop over characters: this runs on every request.
_SHAPE = re.compile(f"{PREFIX}[0-9A-Za-z]{{{_RANDOM_LENGTH + _CHECKSUM_LENGTH}}}", re.ASCII)


def _base62(number: int, width: int) -> str:
    chars = []
    while number:
        number, rest = divmod(number, 62)
        chars.append(_ALPHABET[rest])
    return "".join(reversed(chars)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


def generate_token() -> str:
    body = PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return body + _checksum(body)


def is_well_formed(token: str) -> bool:
    if _SHAPE.fullmatch(token) is None:
        return False
    body, checksum = token[:-_CHECKSUM_LENGTH], token[-_CHECKSUM_LENGTH:]
    return hmac.compare_digest(_checksum(body), checksum)


def hash_token(secret_key: str, token: str) -> str:
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


def display_prefix(token: str) -> str:
    return token[: len(PREFIX) + 6]
