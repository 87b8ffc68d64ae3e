"""The SECRET_KEY every test Settings uses: random, as outside development it must be.

Settings refuses the development key anywhere but development on loopback, and
the subprocess replicas (replicas.py) inherit this one through their environment.
"""

from __future__ import annotations

import secrets

from control_plane.core.secret_rules import weakness


def random_secret_key() -> str:
    """A fresh key the strength rule accepts (a random one fails it about once in 10^6)."""
    while True:
        candidate = secrets.token_urlsafe(32)
        if weakness(candidate) is None:
            return candidate


TEST_SECRET_KEY = random_secret_key()
