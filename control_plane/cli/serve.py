"""`conch serve`: the control plane, with the embedded Triton and Redis where no
external one is given, until Ctrl-C or SIGTERM.

Against an external Triton (`--triton-url`) and Redis (`REDIS_URL`) nothing of the
embedded stack is imported: that is how production runs, with `pip install conch`
and no extras.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Protocol

import typer
import uvicorn
from rich.console import Console

from conch_manifest.locations import default_model_repository, state_dir
from control_plane.cli.config import cli_settings
from control_plane.cli.worker_metrics import worker_metrics
from control_plane.core.access_log import configure_logging
from control_plane.core.tracing import traces_endpoint

if TYPE_CHECKING:
    from conch_embedded.stack import StackConfig

console = Console(stderr=True)

# OTLP/HTTP's standard port on this machine: where a local collector listens.
LOCAL_COLLECTOR = "http://localhost:4318"

TritonUrl = Annotated[
    str | None,
    typer.Option(
        "--triton-url",
        help="gRPC host:port of an external Triton (e.g. the NGC container); "
        "without it Conch starts the embedded tritonserver.",
    ),
]
TritonHttpUrl = Annotated[
    str | None,
    typer.Option("--triton-http-url", help="HTTP host:port of the external Triton, if any."),
]
Repository = Annotated[
    Path,
    typer.Option("--repository", help="Triton model repository root.", file_okay=False),
]
Port = Annotated[
    int | None,
    typer.Option("--port", help="Control-plane port [default: INFERENCE_PORT or 8081]."),
]
Host = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="CONCH_HOST",
        help="Address every server listens on; beyond loopback SECRET_KEY must be set.",
    ),
]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Control-plane worker processes.")]
Trace = Annotated[
    bool,
    typer.Option(
        "--trace",
        help="OpenTelemetry traces of every request, Conch's spans and the embedded "
        "Triton's in one trace, sent over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT "
        f"[default: {LOCAL_COLLECTOR}, a local collector].",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    triton_url: TritonUrl = None,
    triton_http_url: TritonHttpUrl = None,
    repository: Repository = default_model_repository(),
    port: Port = None,
    host: Host = "127.0.0.1",
    workers: Workers = 1,
    http_port: Annotated[int, typer.Option(help="Embedded Triton HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Embedded Triton gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Embedded Triton metrics port.")] = 8002,
    trace: Trace = False,
) -> None:
    """Serve Triton, Redis and the control plane until Ctrl-C (or SIGTERM) stops them all.

    Triton is embedded unless --triton-url names one; Redis is embedded unless
    REDIS_URL is set (its data kept in .conch/redis-data); SQL is SQLite unless
    DATABASE_URL is set. An embedded Triton or Redis that dies is restarted on the
    same ports, with backoff."""
    redis_url = os.environ.get("REDIS_URL") or None
    repository = repository.resolve()
    trace_url = _trace_url() if trace else None
    if trace_url is not None and triton_url is not None:
        # An external Triton is configured by whoever starts it (README: Traces).
        console.print(
            f"traces: Conch's spans go to {trace_url}; for Triton's, start it with "
            f"--trace-config mode=opentelemetry --trace-config opentelemetry,url={trace_url} "
            "--trace-config rate=0 --trace-config level=TIMESTAMPS"
        )
    if triton_url is not None and redis_url is not None:
        external = ExternalStack(repository, host, triton_url, triton_http_url or "", redis_url)
        run_stack(external, port=port, workers=workers)
        return
    # The embedded extra: imported only here.
    from conch_embedded.stack import REDIS_DATA_DIR, StackConfig

    config = StackConfig(
        model_repository=repository,
        triton_url=triton_url,
        triton_http_url=triton_http_url,
        redis_url=redis_url,
        # Accepted tasks must survive a restart of the stack (the demo's Redis is throwaway).
        redis_data_dir=state_dir() / REDIS_DATA_DIR,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        host=host,
        trace_url=trace_url,
    )
    run_stack(config, port=port, workers=workers)


def _trace_url() -> str:
    """Where `--trace` sends spans: the OTEL_* variables' endpoint, else a local
    collector, set for the control plane's workers too (they read the variable)."""
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not base and not traces:
        base = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = LOCAL_COLLECTOR
    url = traces_endpoint(base, traces)
    if url is None:
        raise typer.BadParameter("OTEL_SDK_DISABLED is true", param_hint="--trace")
    return url


class Stack(Protocol):
    """What the control plane is pointed at, started and stopped around serving it."""

    @property
    def triton_grpc_url(self) -> str: ...
    @property
    def triton_http_url(self) -> str: ...
    @property
    def triton_metrics_url(self) -> str | None: ...
    @property
    def redis_url(self) -> str: ...
    def stop(self) -> None: ...


@dataclass
class ExternalStack:
    """An external Triton and Redis: nothing to start or stop."""

    model_repository: Path
    host: str
    triton_grpc_url: str
    triton_http_url: str
    redis_url: str
    triton_metrics_url: str | None = None

    def stop(self) -> None:
        pass


def run_stack(
    config: StackConfig | ExternalStack,
    *,
    port: int | None,
    workers: int,
    before_serve: Callable[[Stack, int], None] | None = None,
) -> None:
    """Start the stack, run `before_serve` (e.g. seed the demo), serve, tear everything down.

    SIGTERM and Ctrl-C end it the same way, whenever they come: the control plane
    drains (uvicorn), then Triton and Redis stop, and the command exits with 0."""
    port = port or int(os.environ.get("INFERENCE_PORT", "8081"))
    settings = cli_settings(host=config.host)  # refuse before starting anything
    # The workers configure their own (the app factory); this covers the parent's lines.
    configure_logging(settings.log_level, settings.log_output, access_log=settings.access_log)
    config.model_repository.mkdir(parents=True, exist_ok=True)
    with _signals_stop_the_stack():
        try:
            _serve_stack(config, port, workers, before_serve)
        except _StopRequested as stop:
            console.print(f"stopped ({stop})")


def _serve_stack(
    config: StackConfig | ExternalStack,
    port: int,
    workers: int,
    before_serve: Callable[[Stack, int], None] | None,
) -> None:
    stack: Stack = config if isinstance(config, ExternalStack) else _start_embedded(config)
    try:
        _export_environment(stack, config)
        if before_serve is not None:
            before_serve(stack, port)
        _print_urls(stack, config.host, port)
        with worker_metrics(workers):
            uvicorn.run(
                "control_plane.app:create_app",
                factory=True,
                host=config.host,
                port=port,
                workers=workers,
                loop="uvloop",
                http="httptools",
                log_level="info",
                # Logging is Conch's (core/access_log.py): its access line replaces uvicorn's.
                log_config=None,
                access_log=False,
            )
    finally:
        # A second SIGTERM must not cut the shutdown short (a second Ctrl-C may).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        console.print("stopping Triton and Redis...")
        stack.stop()


def _start_embedded(config: StackConfig) -> Stack:
    from conch_embedded.process import ProcessStartError
    from conch_embedded.stack import EmbeddedStack

    try:
        with console.status("starting Redis and Triton..."):
            return EmbeddedStack(config).start()
    except ProcessStartError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


class _StopRequested(BaseException):
    """SIGTERM or SIGINT, raised wherever the main thread is, like KeyboardInterrupt."""


def _raise_stop(signum: int, _: FrameType | None) -> None:
    raise _StopRequested(signal.Signals(signum).name)


@contextmanager
def _signals_stop_the_stack() -> Iterator[None]:
    # While uvicorn serves, its own handlers drain the requests first; then it raises
    # the signal again, which lands here. Before, SIGTERM's default action killed the
    # process at that point, before Triton and Redis were stopped.
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _export_environment(stack: Stack, config: StackConfig | ExternalStack) -> None:
    # The control plane reads its settings from the environment; uvicorn workers inherit it.
    os.environ["REDIS_URL"] = stack.redis_url
    os.environ["CONCH_TRITON_GRPC_URL"] = stack.triton_grpc_url
    if stack.triton_http_url:  # else predictions go over gRPC too
        os.environ["CONCH_TRITON_HTTP_URL"] = stack.triton_http_url
    os.environ["CONCH_MODEL_REPOSITORY"] = str(config.model_repository)
    os.environ["CONCH_HOST"] = config.host  # where the development key is acceptable


def _print_urls(stack: Stack, host: str, port: int) -> None:
    console.print(f"[bold]Conch control plane[/bold]  http://{host}:{port}  (docs: /docs)")
    console.print(f"Triton gRPC           {stack.triton_grpc_url}")
    if stack.triton_http_url:
        console.print(f"Triton HTTP           http://{stack.triton_http_url}")
    if stack.triton_metrics_url:
        console.print(f"Triton metrics        {stack.triton_metrics_url}")
    console.print(f"Redis                 {stack.redis_url}")
    console.print("Press Ctrl-C to stop.")
