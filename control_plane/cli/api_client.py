"""The HTTP side of the management CLI: one call, JSON printed, errors as one line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console

from conch.client import Client, ConchError
from conch_manifest.locations import default_control_plane_url, state_dir

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="CONCH_URL",
        default_factory=default_control_plane_url,
        # The value this process will use: the factory reads the same environment.
        show_default=default_control_plane_url(),
        help="Control-plane base URL: $CONCH_URL, else http://127.0.0.1:$INFERENCE_PORT (8081).",
    ),
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
    body = send(url, api_key, lambda conch: conch.request(method, path, json=json, params=params))
    console.print_json(data=body)
    return body


def send(url: str, api_key: str, action: Callable[[Client], T]) -> T:
    """`action`'s answer through a client of `url`, or exit 1 with the error message."""
    with exit_on_failure(url), Client(url, api_key, timeout_s=30) as conch:
        return action(conch)


@contextmanager
def exit_on_failure(url: str) -> Iterator[None]:
    """An unreachable `url` or a refused request: its one-line message, and exit 1."""
    try:
        yield
    except httpx.TransportError as exc:
        err_console.print(f"[red]cannot reach {url}: {exc}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    except ConchError as exc:
        err_console.print(f"[red]{exc.status}: {exc.message}[/red]", highlight=False)
        hint = missing_scope_hint({"details": exc.details}) if exc.status == 403 else None
        if hint is not None:
            err_console.print(hint, markup=False, highlight=False)
        raise typer.Exit(1) from exc


def missing_scope_hint(body: Any) -> str | None:
    """What to do when the key lacks the route's scope (the 403 body names it in
    details.required); None for the other refusals (a key restricted to a project)."""
    details = body.get("details") if isinstance(body, dict) else None
    required = details.get("required") if isinstance(details, dict) else None
    if not isinstance(required, str):
        return None
    demo_env = state_dir() / "demo.env"
    return (
        f"This command needs an API key with the {required!r} scope (admin implies every "
        "scope): pass it with --api-key or CONCH_API_KEY.\n"
        f"In the demo, {demo_env} has CONCH_ADMIN_KEY, an admin key (its CONCH_API_KEY is "
        'a predict key): run it with CONCH_API_KEY="$CONCH_ADMIN_KEY" after sourcing it.'
    )
