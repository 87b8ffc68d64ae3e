"""What a setting's value must look like, apart from its type and bounds: rates,
database URLs, the secret key. Settings (core/settings.py) validates with these;
the API checks per-key rate overrides with `parse_rate` too."""

from __future__ import annotations

from functools import lru_cache

from control_plane.core import secret_rules

# Public (it is in this repository): accepted only with CONCH_ENVIRONMENT=development on
# a loopback CONCH_HOST; everywhere else Settings refuses to be built with it.
DEVELOPMENT_SECRET_KEY = "conch-development-secret-do-not-use-in-production"

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@lru_cache(maxsize=1024)  # called on every rate-limited request with a handful of values
def parse_rate(rate: str) -> tuple[int, float]:
    """'100/minute' -> (100, 60.0). Also accepts '10/second', '5/2minute' is not supported."""
    try:
        count_text, unit = rate.strip().split("/", 1)
        count = int(count_text)
        unit = unit.strip().lower().rstrip("s")
        period = _UNITS[unit]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"rate {rate!r} is not of the form N/second|minute|hour|day") from exc
    if count < 1:
        raise ValueError(f"rate {rate!r} must allow at least one request")
    return count, period


def async_database_url(url: str) -> str:
    """Accept plain URLs (postgresql://, sqlite:///) and pick the async driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def secret_key_refusal(environment: str, host: str | None, secret: str) -> str | None:
    """Why this SECRET_KEY may not be used where the server runs; None: it may."""
    if environment == "development" and (host is None or secret_rules.is_loopback(host)):
        return None  # nobody else can reach this server: any key will do
    where = f"CONCH_ENVIRONMENT={environment}, CONCH_HOST={host}"
    if secret == DEVELOPMENT_SECRET_KEY:
        return (
            f"SECRET_KEY is unset ({where}): the built-in development key is accepted "
            "only with CONCH_ENVIRONMENT=development on a loopback CONCH_HOST; set "
            f"SECRET_KEY to a random value ({secret_rules.RULE}), e.g. the output of "
            f"{secret_rules.GENERATE_HINT}"
        )
    weakness = secret_rules.weakness(secret)
    if weakness is not None:
        return (
            f"SECRET_KEY is too weak ({where}): {weakness}; outside development on "
            f"loopback it needs {secret_rules.RULE}, e.g. the output of "
            f"{secret_rules.GENERATE_HINT}"
        )
    return None
