"""Settings for the commands that need them: a refusal is one line, not a traceback."""

from __future__ import annotations

import pydantic
import typer

from control_plane.core.settings import Settings, get_settings, settings_error_line


def cli_settings(*, host: str | None = None) -> Settings:
    """The environment's settings, or exit 2 with one line saying what to set.

    `host` is the address a serving command is about to listen on: it decides
    whether the development SECRET_KEY is acceptable, so it is checked before
    anything starts."""
    try:
        return get_settings() if host is None else Settings(host=host)
    except pydantic.ValidationError as exc:
        typer.echo(f"error: {settings_error_line(exc)}", err=True)
        raise typer.Exit(2) from None
