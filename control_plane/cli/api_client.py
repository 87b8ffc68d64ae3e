"""The HTTP side of the management CLI: one call, JSON printed, errors as one line."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DEFAULT_URL = f"http://127.0.0.1:{os.environ.get('INFERENCE_PORT', '8081')}"

UrlOption = Annotated[
    str, typer.Option("--url", envvar="CONCH_URL", help="Control-plane base URL.")
]
ApiKeyOption = Annotated[
    str,
    typer.Option(
        "--api-key",
        envvar="CONCH_API_KEY",
        help="API key with the needed scope (create the first with `conch keys create`).",
    ),
]


def call(
    method: str,
    url: str,
    api_key: str,
    path: str,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """Send one request; print and return the JSON body, or exit 1 with the error message."""
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            json=json,
            params=params,
            headers={"X-API-Key": api_key},
            timeout=30,
        )
    except httpx.TransportError as exc:
        err_console.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(1) from exc
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text}
    if response.is_error:
        message = body.get("message", response.reason_phrase) if isinstance(body, dict) else body
        err_console.print(f"[red]{response.status_code}: {message}[/red]")
        raise typer.Exit(1)
    console.print_json(data=body)
    return body
