"""`conch demo` (what `make run` runs): build the demo models, seed the demo
project, slots and keys, write `.conch/demo.env`, and serve the whole stack."""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from conch_embedded.demo.models import DemoModels, build_demo
from conch_embedded.demo.seed import DemoSeed, seed_demo
from conch_embedded.process import ProcessStartError
from conch_embedded.stack import StackConfig
from conch_manifest.locations import default_model_repository, state_dir
from control_plane.cli.config import cli_settings
from control_plane.cli.serve import Host, Port, Repository, Stack, Workers, console, run_stack
from control_plane.core.settings import Settings
from exporters.cli import InstanceKind, RepositoryOpt
from exporters.errors import ExportError

DEMO_ENV = "demo.env"
# Where `POST /api/inference/models/load` reads files from in the demo (CONCH_IMPORT_DIR).
DEMO_IMPORTS = "imports"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("demo-models")(demo_models)


def demo(
    repository: Repository = default_model_repository(),
    port: Port = None,
    host: Host = "127.0.0.1",
    workers: Workers = 1,
    http_port: Annotated[int, typer.Option(help="Embedded Triton HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Embedded Triton gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Embedded Triton metrics port.")] = 8002,
) -> None:
    """Build and serve the demo (what `make run` runs); settings go to .conch/demo.env.

    The demo models are built on the first run only; the demo project gets two
    A/B recommender slots and fresh predict and admin keys on every run, and the
    previous run's keys are revoked: only those in .conch/demo.env work."""
    cli_settings(host=host)  # a refused SECRET_KEY fails now, not after building the models
    repository = repository.resolve()
    repository.mkdir(parents=True, exist_ok=True)
    try:
        with console.status("building the demo models (first run only)...") as status:
            models = build_demo(repository, lambda step: status.update(f"demo: {step}"))
    except ExportError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None

    # Model import reads files from here only; an operator's own CONCH_IMPORT_DIR wins.
    import_dir = Path(os.environ.setdefault("CONCH_IMPORT_DIR", str(state_dir() / DEMO_IMPORTS)))
    import_dir.mkdir(parents=True, exist_ok=True)

    config = StackConfig(
        model_repository=repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        host=host,
        # Preload the models the demo serves, so the first requests are fast.
        load_models=[models.tabular_classifier, *models.recommenders.values()],
    )

    def seed(stack: Stack, control_port: int) -> None:
        # Settings read after run_stack exported the stack's URLs into the environment.
        seeded = asyncio.run(seed_demo(Settings(), models))
        path = write_demo_env(state_dir() / DEMO_ENV, stack, host, control_port, models, seeded)
        console.print(f"demo settings written to {path}")

    run_stack(config, port=port, workers=workers, before_serve=seed)


def write_demo_env(
    path: Path,
    stack: Stack,
    host: str,
    port: int,
    models: DemoModels,
    seeded: DemoSeed,
) -> Path:
    """Shell `KEY=value` lines; lists are space-separated. Holds keys: mode 0600."""
    values = {
        "CONCH_URL": f"http://{host}:{port}",
        "CONCH_TRITON_HTTP": stack.triton_http_url,
        "CONCH_TRITON_GRPC": stack.triton_grpc_url,
        "CONCH_DEMO_TABULAR_MODEL": models.tabular_classifier,
        "CONCH_DEMO_REGRESSOR_MODEL": models.tabular_regressor,
        "CONCH_DEMO_TEXT_MODEL": models.text_classifier,
        "CONCH_DEMO_MLP_MODEL": models.mlp,
        "CONCH_DEMO_RECOMMENDER_MODELS": " ".join(models.recommenders.values()),
        "CONCH_API_KEY": seeded.predict_key,
        "CONCH_ADMIN_KEY": seeded.admin_key,
        "CONCH_PROJECT_ID": str(seeded.project_id),
        "CONCH_MODEL_IDS": " ".join(str(i) for i in seeded.model_ids.values()),
        "CONCH_DEMO_USER_IDS": " ".join(models.demo_user_ids),
        "CONCH_IMPORT_DIR": os.environ.get("CONCH_IMPORT_DIR", str(state_dir() / DEMO_IMPORTS)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
    temporary.replace(path)
    return path


def demo_models(
    repository: RepositoryOpt = None,
    instance_kind: Annotated[
        InstanceKind, typer.Option(help="Where the TorchScript MLP runs (the others stay on CPU).")
    ] = InstanceKind.cpu,
) -> None:
    """Build the demo models (offline, seeded); a no-op when they are already built."""
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task("demo models", total=None)
            built = build_demo(
                repository or default_model_repository(),
                progress=lambda message: progress.update(task, description=f"demo: {message}"),
                instance_kind="gpu" if instance_kind is InstanceKind.gpu else "cpu",
            )
    except (ExportError, ProcessStartError, OSError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for field, value in built.model_dump(exclude={"demo_version"}).items():
        print(f"{field}: {value}")
