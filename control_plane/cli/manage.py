"""`conch` management subcommands: db, keys, projects, models, slots, ab.

Everything but `db upgrade` and `keys create` talks to a running control plane
over HTTP (`--url`, default $CONCH_URL or the local one; `--api-key`/CONCH_API_KEY);
each command's help names the scope its key needs. Those two work straight
against DATABASE_URL, so the first admin key can be made before any server runs.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from conch_manifest.layout import newest_export
from conch_manifest.locations import default_model_repository
from conch_manifest.names import InvalidModelNameError, check_model_name
from control_plane.cli.api_client import ApiKeyOption, UrlOption, call, console, err_console
from control_plane.cli.config import cli_settings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys (plaintext is shown once, at creation).", no_args_is_help=True
)
projects_app = typer.Typer(help="Projects: sets of deployment slots.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
slots_app = typer.Typer(help="Deployment slots of a project.", no_args_is_help=True)
ab_app = typer.Typer(help="A/B results and promotion.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations to DATABASE_URL (idempotent)."""
    from control_plane.db import upgrade

    upgrade(cli_settings().database_url)
    console.print("database schema is up to date")


@keys_app.command("create")
def keys_create(
    scope: Annotated[
        list[str], typer.Option("--scope", help="predict, read, write or admin (repeatable).")
    ],
    project: Annotated[int | None, typer.Option(help="Restrict the key to one project id.")] = None,
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    expires_at: Annotated[
        datetime | None, typer.Option(help="Expiry, e.g. 2030-01-01T00:00:00+00:00.")
    ] = None,
    rate_limit: Annotated[str | None, typer.Option(help="e.g. 500/minute.")] = None,
) -> None:
    """Create a key straight in the database (migrating it first) and print it once."""
    from control_plane.cli.keys_db import create_key_in_database

    token = asyncio.run(
        create_key_in_database(
            cli_settings(),
            scopes=scope,
            project_id=project,
            name=name,
            expires_at=expires_at,
            rate_limit=rate_limit,
        )
    )
    console.print("API key (store it now, it is not shown again):")
    console.print(token, markup=False, highlight=False)


@keys_app.command("list")
def keys_list(url: UrlOption, api_key: ApiKeyOption) -> None:
    """List keys (admin scope)."""
    call("GET", url, api_key, "/api/v1/keys")


@keys_app.command("revoke")
def keys_revoke(key_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Revoke a key; every replica refuses it from the next request on (admin scope)."""
    call("DELETE", url, api_key, f"/api/v1/keys/{key_id}")


@projects_app.command("create")
def projects_create(
    name: str,
    url: UrlOption,
    api_key: ApiKeyOption,
    sticky: Annotated[bool, typer.Option(help="Same user -> same slot.")] = False,
) -> None:
    """Create a project (write scope, a key for no single project)."""
    call("POST", url, api_key, "/api/v1/projects", json={"name": name, "sticky": sticky})


@projects_app.command("list")
def projects_list(url: UrlOption, api_key: ApiKeyOption) -> None:
    """List projects (read scope)."""
    call("GET", url, api_key, "/api/v1/projects")


@models_app.command("register")
def models_register(
    url: UrlOption,
    api_key: ApiKeyOption,
    repository: Annotated[
        Path,
        typer.Option(
            envvar="CONCH_MODEL_REPOSITORY",
            default_factory=default_model_repository,
            show_default=str(default_model_repository()),
            help="Where --name looks for exports (the control plane's model repository).",
        ),
    ],
    triton_name: Annotated[
        str | None, typer.Argument(help="The repository directory, e.g. iris-logreg-0123456789.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The export's --name: registers its newest export."),
    ] = None,
    project: Annotated[
        int | None,
        typer.Option(
            "--project",
            help="Register into this project id: its keys see the model. Required with a "
            "key restricted to a project.",
        ),
    ] = None,
) -> None:
    """Register model_repository/<TRITON_NAME>, or the newest export of --name, from its
    manifest (hashes verified). Needs the write scope; without --project, a key for no
    single project."""
    if (triton_name is None) == (name is None):
        err_console.print("give either TRITON_NAME or --name (exactly one)", highlight=False)
        raise typer.Exit(2)
    if name is not None:
        triton_name = _newest_export_or_exit(repository, name)
    body: dict[str, object] = {"triton_name": triton_name}
    if project is not None:
        body["project_id"] = project
    call("POST", url, api_key, "/api/v1/models", json=body)


def _newest_export_or_exit(repository: Path, name: str) -> str:
    try:
        check_model_name(name)
    except InvalidModelNameError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    found = newest_export(repository, name)
    if found is None:
        err_console.print(
            f"error: no export named {name!r} in {repository}; export it first "
            f"(`conch export ... --name {name}`) or pass --repository",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)
    # stderr: stdout stays the API's JSON answer.
    err_console.print(f"newest export of {name!r}: {found}", markup=False, highlight=False)
    return found


@models_app.command("list")
def models_list(url: UrlOption, api_key: ApiKeyOption) -> None:
    """List registered models (read scope)."""
    call("GET", url, api_key, "/api/v1/models")


@models_app.command("info")
def models_info(model_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Framework, tensors, size on disk; load state, loaded-at, last use, load error (on the
    replica at --url; read scope)."""
    call("GET", url, api_key, f"/api/v1/models/{model_id}")


@models_app.command("load")
def models_load(model_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Load and warm the model on the replica at --url now (write scope)."""
    call("POST", url, api_key, f"/api/v1/models/{model_id}/load")


@models_app.command("unload")
def models_unload(model_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Unload from the replica at --url; refused while an active slot serves it (write scope)."""
    call("POST", url, api_key, f"/api/v1/models/{model_id}/unload")


@models_app.command("reload")
def models_reload(model_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Reload in place on the replica at --url; the loaded copy serves meanwhile (write
    scope)."""
    call("POST", url, api_key, f"/api/v1/models/{model_id}/reload")


@models_app.command("metrics")
def models_metrics(model_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Requests, errors, average latency/queue/compute and batch sizes, from Triton (read
    scope)."""
    call("GET", url, api_key, f"/api/v1/models/{model_id}/metrics")


@models_app.command("delete")
def models_delete(model_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Unregister a model no slot uses; every replica unloads it (write scope; a key of a
    project deletes only models registered into that project)."""
    call("DELETE", url, api_key, f"/api/v1/models/{model_id}")


@models_app.command("engine")
def models_engine(url: UrlOption, api_key: ApiKeyOption) -> None:
    """Triton version, loaded models (pinned or not), queue and compute time, counters (read
    scope, a key for no single project)."""
    call("GET", url, api_key, "/api/v1/engine")


@slots_app.command("create")
def slots_create(
    project_id: int,
    name: str,
    url: UrlOption,
    api_key: ApiKeyOption,
    model_id: Annotated[int, typer.Option(help="Registered model id.")],
    weight: Annotated[int, typer.Option(min=0, max=100, help="Relative traffic share.")],
    control: Annotated[bool, typer.Option(help="Baseline of A/B comparisons.")] = False,
) -> None:
    """Add a slot serving MODEL_ID to PROJECT_ID (write scope)."""
    body = {"name": name, "model_id": model_id, "weight": weight, "is_control": control}
    call("POST", url, api_key, f"/api/v1/projects/{project_id}/slots", json=body)


@slots_app.command("list")
def slots_list(project_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """List a project's slots (read scope)."""
    call("GET", url, api_key, f"/api/v1/projects/{project_id}/slots")


@slots_app.command("update")
def slots_update(
    slot_id: int,
    url: UrlOption,
    api_key: ApiKeyOption,
    model_id: Annotated[int | None, typer.Option()] = None,
    weight: Annotated[int | None, typer.Option(min=0, max=100)] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive")] = None,
    control: Annotated[bool | None, typer.Option("--control/--no-control")] = None,
) -> None:
    """Change a slot's model, weight, active flag or control flag (write scope)."""
    body = {"model_id": model_id, "weight": weight, "active": active, "is_control": control}
    body = {k: v for k, v in body.items() if v is not None}
    call("PATCH", url, api_key, f"/api/v1/slots/{slot_id}", json=body)


@slots_app.command("deactivate")
def slots_deactivate(slot_id: int, url: UrlOption, api_key: ApiKeyOption) -> None:
    """Stop routing traffic to a slot (write scope)."""
    call("PATCH", url, api_key, f"/api/v1/slots/{slot_id}", json={"active": False})


@ab_app.command("results")
def ab_results(
    project_id: int,
    url: UrlOption,
    api_key: ApiKeyOption,
    min_impressions: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """Per-slot impressions, CTR, conversion rate, lift and z-test against the control (read
    scope)."""
    params = {"min_impressions": min_impressions}
    call("GET", url, api_key, f"/api/v1/projects/{project_id}/ab_results", params=params)


@ab_app.command("promote")
def ab_promote(
    project_id: int,
    url: UrlOption,
    api_key: ApiKeyOption,
    slot_id: Annotated[int | None, typer.Option(help="Default: the significant winner.")] = None,
) -> None:
    """Give one slot all traffic and deactivate the others (write scope)."""
    call("POST", url, api_key, f"/api/v1/projects/{project_id}/promote", json={"slot_id": slot_id})


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root CLI."""
    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
    app.add_typer(projects_app, name="projects")
    app.add_typer(models_app, name="models")
    app.add_typer(slots_app, name="slots")
    app.add_typer(ab_app, name="ab")
