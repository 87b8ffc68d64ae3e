"""`conch export ...`: one subcommand per framework.

Every export converts the model, writes it to a staging directory inside the
model repository, checks parity through a private embedded Triton and only
then publishes it under an immutable, content-addressed name.
"""

from __future__ import annotations

import enum
import importlib
import math
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import httpx
import typer
from rich.console import Console

from conch_embedded.process import ProcessStartError
from conch_manifest.locations import default_control_plane_url, default_model_repository
from conch_manifest.schema import ClassLabel, Task
from exporters.display import show_steps
from exporters.errors import ExportError
from exporters.pipeline import ExportResult, ServingOptions, Transform
from exporters.repository import validate_name
from exporters.steps import ProgressHook

TRUST_WARNING = "Loading a pickle executes code stored in it: export only files you trust."

app = typer.Typer(
    help="Export a trained model into the Triton model repository, parity-checked "
    "through a real Triton before it is published.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)


class InstanceKind(enum.StrEnum):
    cpu = "cpu"
    gpu = "gpu"


class TorchFormat(enum.StrEnum):
    onnx = "onnx"
    torchscript = "torchscript"


class TorchTask(enum.StrEnum):
    classification = "classification"
    regression = "regression"
    embedding = "embedding"
    other = "other"


def parse_labels(text: str) -> list[ClassLabel]:
    """`--labels`: typed as the user wrote them: all integers -> int, all numbers -> float,
    all true/false -> bool, else strings."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        errors.print(f"[red]error:[/] --labels has an empty label: {text!r}")
        raise typer.Exit(2)
    try:
        return [int(part) for part in parts]
    except ValueError:
        pass
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        numbers = []
    if numbers and all(math.isfinite(n) for n in numbers):  # "nan" stays a word
        return list(numbers)
    if all(part.lower() in ("true", "false") for part in parts):
        return [part.lower() == "true" for part in parts]
    return list(parts)


ModelPath = Annotated[Path, typer.Argument(help="The trained model file.", show_default=False)]


def _checked_name(name: str) -> str:
    # Refused before any conversion starts, with the same rule the registry applies.
    try:
        return validate_name(name)
    except ExportError as exc:
        raise typer.BadParameter(str(exc)) from None


NameOpt = Annotated[
    str,
    typer.Option(
        "--name",
        callback=_checked_name,
        help="Model name (letters, digits, '_', '-', single dots); the Triton name adds "
        "a content hash.",
    ),
]
RepositoryOpt = Annotated[
    Path | None,
    typer.Option(
        help="Triton model repository (default: $CONCH_MODEL_REPOSITORY, else the "
        "project's model_repository/)."
    ),
]
SampleOpt = Annotated[
    Path,
    typer.Option(
        "--sample-data",
        help="Held-out rows for the parity check: .npy, or .csv (a header row names the "
        "features); for a scikit-learn text pipeline, texts: .txt (one per line), .json "
        "(a list of strings) or .npy.",
    ),
]
AtolOpt = Annotated[
    float | None,
    typer.Option(
        "--atol",
        "--tolerance",
        min=0,
        help="Parity: absolute tolerance per output value (default 1e-5). A value passes "
        "where |triton - source| <= atol + rtol * (largest |source| in its row); integer "
        "outputs must match exactly.",
    ),
]
RtolOpt = Annotated[
    float | None,
    typer.Option(
        "--rtol",
        min=0,
        help="Parity: tolerance relative to the row's largest source value (default 1e-4).",
    ),
]
KindOpt = Annotated[InstanceKind, typer.Option(help="Where Triton runs the model.")]
InstancesOpt = Annotated[int, typer.Option(min=1, help="Model instances Triton runs.")]
BatchOpt = Annotated[
    int, typer.Option(min=0, help="Largest batch Triton forms (0 disables batching).")
]
DelayOpt = Annotated[
    int, typer.Option(min=0, help="How long Triton waits to fill a dynamic batch, in µs.")
]
PriorityOpt = Annotated[
    bool,
    typer.Option(
        "--priority-levels",
        help="Let requests' `priority` (low..urgent) reorder Triton's queue. Measured on the "
        "embedded Triton: about half the throughput under load, so off by default.",
    ),
]


RegisterOpt = Annotated[
    bool,
    typer.Option(
        "--register",
        help="After a successful export, register the model with the control plane at --url; "
        "it announces model_trained and every replica loads the model.",
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Control-plane base URL for --register and the printed next command "
        "(default: $CONCH_URL, else http://127.0.0.1:$INFERENCE_PORT, port 8081).",
        show_default=False,
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="CONCH_API_KEY", help="Key with write scope (--register)."),
]
ProjectOpt = Annotated[
    int | None,
    typer.Option(
        "--project",
        help="Register into this project id (--register): its keys see the model. Required "
        "with a key restricted to a project.",
    ),
]
OptimizeOpt = Annotated[
    bool,
    typer.Option(
        "--optimize",
        help="Publish the ONNX graph optimized offline by onnxruntime (basic level: constant "
        "folding, redundant nodes removed, fusions; portable across CPU and GPU), "
        "parity-checked like any export. Triton's onnxruntime optimizes again when it loads "
        "a model, so do not expect faster predictions from it alone.",
    ),
]


class Registration:
    """Where and with which key `--register` registers an export (None: do not)."""

    def __init__(
        self, register: bool, url: str | None, api_key: str | None, project: int | None = None
    ) -> None:
        if register and not api_key:
            errors.print("[red]error:[/] --register needs --api-key (or CONCH_API_KEY)")
            raise typer.Exit(2)
        self.enabled = register
        self.url = url or default_control_plane_url()  # resolved per run: env may change
        self.api_key = api_key or ""
        self.project_id = project


def register_with_control_plane(
    url: str, api_key: str, triton_name: str, project_id: int | None = None
) -> dict[str, object]:
    """POST /api/v1/models (into `project_id` if given); the server publishes
    model_trained after its commit."""
    body: dict[str, object] = {"triton_name": triton_name}
    if project_id is not None:
        body["project_id"] = project_id
    response = httpx.post(
        url.rstrip("/") + "/api/v1/models",
        json=body,
        headers={"X-API-Key": api_key},
        timeout=30,
    )
    body = response.json() if response.content else {}
    if response.is_error:
        message = body.get("message", response.reason_phrase) if isinstance(body, dict) else body
        raise ExportError(f"registration failed ({response.status_code}): {message}")
    result: dict[str, object] = body
    return result


def _options(
    kind: InstanceKind, instances: int, max_batch: int, delay: int, priorities: bool
) -> ServingOptions:
    return ServingOptions(
        max_batch_size=max_batch,
        instance_kind="gpu" if kind is InstanceKind.gpu else "cpu",
        instances=instances,
        max_queue_delay_us=delay,
        priority_levels=priorities,
    )


def next_command(triton_name: str, url: str, project_id: int | None = None) -> str:
    """The `conch models register` call (control_plane/cli/manage.py) that serves the export;
    the key is left to CONCH_API_KEY so the hint never prints a secret."""
    into = "" if project_id is None else f" --project {project_id}"
    return (
        f"conch models register {triton_name} --url {shlex.quote(url)}{into} "
        '--api-key "$CONCH_API_KEY"'
    )


def _run(
    title: str,
    export: Callable[[ProgressHook], ExportResult],
    registration: Registration,
) -> None:
    try:
        with show_steps(console, title) as hook:
            result = export(hook)
    except (ExportError, ProcessStartError, OSError) as exc:
        errors.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    parity = result.manifest.parity
    state = "already published (unchanged)" if result.reused else "published"
    console.print(f"[bold]{result.triton_name}[/] {state} in {result.path.parent}")
    console.print(
        f"parity: {'passed' if parity.passed else 'FAILED'} on {parity.rows} rows, {parity.detail}"
    )
    optimization = result.manifest.optimization
    if optimization is not None:
        console.print(
            f"optimized: {optimization.tool} {optimization.level} level, "
            f"{optimization.nodes_before} -> {optimization.nodes_after} graph nodes"
        )
    if not registration.enabled:
        console.print("next, register it with the control plane (write scope):")
        console.print(
            f"  {next_command(result.triton_name, registration.url, registration.project_id)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    try:
        model = register_with_control_plane(
            registration.url, registration.api_key, result.triton_name, registration.project_id
        )
    except (ExportError, httpx.HTTPError, ValueError) as exc:
        errors.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"registered as model {model.get('id')} at {registration.url}")


def _repository(repository: Path | None) -> Path:
    return repository or default_model_repository()


def _transforms(optimize: bool) -> list[Transform]:
    if not optimize:
        return []
    from exporters.onnx_optimize import OnnxGraphOptimization

    return [OnnxGraphOptimization()]


def _tabular_command(framework: str, help: str) -> None:
    """Register `conch export <framework>`: the three tabular exporters share their options."""

    def command(
        model: ModelPath,
        name: NameOpt,
        sample_data: SampleOpt,
        repository: RepositoryOpt = None,
        atol: AtolOpt = None,
        rtol: RtolOpt = None,
        instance_kind: KindOpt = InstanceKind.cpu,
        instances: InstancesOpt = 1,
        max_batch_size: BatchOpt = 64,
        max_queue_delay_us: DelayOpt = 100,
        priority_levels: PriorityOpt = False,
        optimize: OptimizeOpt = False,
        register: RegisterOpt = False,
        url: UrlOpt = None,
        api_key: ApiKeyOpt = None,
        project: ProjectOpt = None,
    ) -> None:
        registration = Registration(register, url, api_key, project)
        # Imported here: each framework is an optional extra.
        module = importlib.import_module(f"exporters.{framework}_exporter")
        export = getattr(module, f"export_{framework}")
        options = _options(
            instance_kind, instances, max_batch_size, max_queue_delay_us, priority_levels
        )
        _run(
            f"{framework} {name}",
            lambda hook: export(
                model, name=name, repository=_repository(repository), sample=sample_data,
                atol=atol, rtol=rtol, options=options, progress=hook,
                transforms=_transforms(optimize),
            ),
            registration,
        )  # fmt: skip

    app.command(name=framework, help=help)(command)


_tabular_command(
    "sklearn",
    "scikit-learn estimator or Pipeline (.joblib / .pkl); a Pipeline that starts with a "
    "CountVectorizer or TfidfVectorizer is exported as a text model (one string per "
    f"sample). {TRUST_WARNING}",
)
_tabular_command("xgboost", "XGBoost model saved with save_model (.json / .ubj; no code runs).")
_tabular_command("lightgbm", "LightGBM model saved with save_model (.txt; no code runs).")


@app.command(
    help="PyTorch model: a TorchScript archive (torch.jit.save; no code runs) or a pickled "
    f"nn.Module (torch.save). {TRUST_WARNING}"
)
def torch(
    model: ModelPath,
    name: NameOpt,
    input_shape: Annotated[
        str | None,
        typer.Option(help="Shape of one sample without the batch axis, e.g. 256 or 3,224,224."),
    ] = None,
    sample_data: Annotated[
        Path | None,
        typer.Option(help="Held-out rows (.npy); seeded random rows of --input-shape otherwise."),
    ] = None,
    format: Annotated[
        TorchFormat,
        typer.Option(help="onnx (onnxruntime backend) or torchscript (pytorch backend)."),
    ] = TorchFormat.onnx,
    task: Annotated[
        TorchTask | None,
        typer.Option(
            help="What the model does (default: classification with --labels, else other)."
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            help="Class labels, one per column of OUTPUT__0, comma-separated: cat,dog,bird; "
            "0,1,2 answers integers, 0.5,1.5 floats, true,false booleans. Predictions then "
            "answer the label of each row's highest column.",
        ),
    ] = None,
    repository: RepositoryOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    instance_kind: KindOpt = InstanceKind.cpu,
    instances: InstancesOpt = 1,
    max_batch_size: BatchOpt = 64,
    max_queue_delay_us: DelayOpt = 100,
    priority_levels: PriorityOpt = False,
    optimize: OptimizeOpt = False,
    register: RegisterOpt = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    project: ProjectOpt = None,
) -> None:
    from exporters.torch_exporter import export_torch

    if optimize and format is TorchFormat.torchscript:
        errors.print(
            "[red]error:[/] --optimize applies to --format onnx; TorchScript is served as saved"
        )
        raise typer.Exit(2)
    registration = Registration(register, url, api_key, project)
    try:
        shape = tuple(int(d) for d in input_shape.split(",")) if input_shape else None
    except ValueError:
        message = f"--input-shape must be integers separated by commas, not {input_shape!r}"
        errors.print(f"[red]error:[/] {message}")
        raise typer.Exit(1) from None
    class_labels = parse_labels(labels) if labels is not None else None
    torch_task: Task | None = None if task is None else task.value
    options = _options(
        instance_kind, instances, max_batch_size, max_queue_delay_us, priority_levels
    )
    torch_format: Literal["onnx", "torchscript"] = (
        "torchscript" if format is TorchFormat.torchscript else "onnx"
    )
    _run(
        f"torch {name}",
        lambda hook: export_torch(
            model, name=name, repository=_repository(repository), input_shape=shape,
            sample=sample_data, format=torch_format, task=torch_task, labels=class_labels,
            atol=atol, rtol=rtol, options=options, progress=hook,
            transforms=_transforms(optimize),
        ),
        registration,
    )  # fmt: skip


@app.command(
    help="Conch recommender (.npz from exporters.implicit: iALS or item-kNN; no code runs)."
)
def recommender(
    model: ModelPath,
    name: NameOpt,
    max_k: Annotated[
        int | None, typer.Option(min=1, help="Items returned per user (default: min(items, 1000)).")
    ] = None,
    repository: RepositoryOpt = None,
    instance_kind: KindOpt = InstanceKind.cpu,
    instances: InstancesOpt = 1,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Largest batch Triton forms.")] = 64,
    max_queue_delay_us: DelayOpt = 100,
    priority_levels: PriorityOpt = False,
    optimize: OptimizeOpt = False,
    register: RegisterOpt = False,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    project: ProjectOpt = None,
) -> None:
    from exporters.recommender import export_recommender

    registration = Registration(register, url, api_key, project)
    options = _options(
        instance_kind, instances, max_batch_size, max_queue_delay_us, priority_levels
    )
    _run(
        f"recommender {name}",
        lambda hook: export_recommender(
            model, name=name, repository=_repository(repository), max_k=max_k,
            options=options, progress=hook, transforms=_transforms(optimize),
        ),
        registration,
    )  # fmt: skip


def register(conch: typer.Typer) -> None:
    conch.add_typer(app, name="export")
