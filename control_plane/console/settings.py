"""The console's own knobs, read from `CONCH_CONSOLE_<NAME>` (documented in README)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONCH_CONSOLE_", extra="ignore")

    session_ttl_s: int = Field(
        8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="a console session's life; never beyond its key's own expiry",
    )
    # Behind a proxy that ends TLS the app sees plain HTTP: say so here.
    secure_cookie: bool | None = Field(
        None,
        description="mark the session cookie Secure: true, false, or unset to follow the "
        "request's scheme (https: Secure)",
    )
    trend_days: int = Field(30, ge=1, le=366, description="days shown by the A/B trend")
    trend_max_slots: int = Field(
        8, ge=1, le=50, description="slots drawn in the trend: the control and the busiest"
    )


def console_settings(request: Request) -> ConsoleSettings:
    """The settings `mount_console` put on the app (defaults for an app without them)."""
    found = getattr(request.app.state, "console_settings", None)
    return found if isinstance(found, ConsoleSettings) else ConsoleSettings()
