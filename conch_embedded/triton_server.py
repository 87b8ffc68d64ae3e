"""Start and stop the `tritonserver` binary shipped in the nvidia-pytriton wheel.

The wheel carries Triton 2.51 with only the Python backend. Conch assembles a
backend directory at start: pytriton's `python/` backend (with the stub built
for the running Python) beside Conch's Python-based backends from
`triton/config/backends/` (`onnxruntime`, `pytorch`), so a `config.pbtxt` that
names `backend: "onnxruntime"` runs unchanged here and in NVIDIA's container.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conch_embedded.process import (
    ManagedProcess,
    ProcessExited,
    ProcessService,
    ProcessStartError,
    free_ports,
    http_ok,
    port_is_free,
    tail,
)
from conch_embedded.run_dirs import new_run_dir
from conch_manifest.locations import BACKENDS_SOURCE_DIR, state_dir

# Environment variable through which backends find the virtualenv's packages:
# the stub embeds libpython and ignores PYTHONPATH.
SITE_PACKAGES_ENV = "CONCH_BACKEND_SITE_PACKAGES"

# A Python backend stub's argv: [stub, model path, shared-memory region name, ...].
_STUB_NAME = "triton_python_backend_stub"
_SHM_DIR = Path("/dev/shm")


class TritonStartError(ProcessStartError):
    """Triton could not be started; the message says why in one line."""


@dataclass(frozen=True)
class TritonInstallation:
    binary: Path
    libs_dir: Path
    python_backend_dir: Path
    stub: Path
    libpython_dir: Path

    @classmethod
    def locate(cls) -> TritonInstallation:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonStartError(
                "tritonserver binary not found: the nvidia-pytriton package is not installed "
                "(pip install nvidia-pytriton), or pass --triton-url to use an external Triton"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        server_dir = package_dir / "tritonserver"
        binary = server_dir / "bin" / "tritonserver"
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise TritonStartError(f"tritonserver binary missing or not executable at {binary}")
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonStartError(
                f"nvidia-pytriton ships no Python backend stub for Python {version} ({stub})"
            )
        return cls(
            binary=binary,
            libs_dir=package_dir.parent / "nvidia_pytriton.libs",
            python_backend_dir=server_dir / "backends" / "python",
            stub=stub,
            libpython_dir=_shared_libpython_dir(version),
        )


def _shared_libpython_dir(version: str) -> Path:
    """The directory holding libpython3.X.so.1.0, which the backend stub links against."""
    name = f"libpython{version}.so.1.0"
    candidates = [
        sysconfig.get_config_var("LIBDIR"),
        str(Path(sys.base_prefix) / "lib"),
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    for directory in candidates:
        if directory and (Path(directory) / name).exists():
            return Path(directory)
    raise TritonStartError(
        f"shared library {name} not found: Triton's Python backend needs a Python built "
        f"with --enable-shared (e.g. apt install libpython{version}, or pyenv with "
        "PYTHON_CONFIGURE_OPTS=--enable-shared)"
    )


@dataclass
class EmbeddedTriton(ProcessService):
    """One tritonserver process in explicit model-control mode; a restart (stop,
    then start) keeps its ports and loads `load_models` again."""

    name = "tritonserver"
    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    load_models: list[str] = field(default_factory=list)
    log_path: Path | None = None
    startup_timeout_s: float = 60.0
    # An OTLP/HTTP traces URL: Triton then exports its own spans of the requests
    # that carry a W3C traceparent (`trace_arguments`).
    trace_url: str | None = None
    _process: ManagedProcess | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)

    @classmethod
    def on_free_ports(cls, model_repository: Path, **options: Any) -> EmbeddedTriton:
        """A server on three distinct ports free right now (tests, parity checks, benches)."""
        http_port, grpc_port, metrics_port = free_ports(3)
        return cls(
            model_repository,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            **options,
        )

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """tritonserver's pid while started (its backend stubs are its children)."""
        return None if self._process is None else self._process.pid

    def start(self) -> EmbeddedTriton:
        installation = TritonInstallation.locate()
        if not self.model_repository.is_dir():
            raise TritonStartError(f"model repository {self.model_repository} does not exist")
        for label, port in (
            ("HTTP", self.http_port),
            ("gRPC", self.grpc_port),
            ("metrics", self.metrics_port),
        ):
            if not port_is_free(port, self.host):
                raise TritonStartError(
                    f"Triton {label} port {port} is already in use on {self.host}"
                )

        self._workdir = new_run_dir("triton")
        backend_dir = _assemble_backends(installation, self._workdir / "backends")
        log_path = self.log_path or state_dir() / "logs" / f"triton-{self.grpc_port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.exists():  # the previous server's log (a crash's last words): kept once
            log_path.replace(log_path.with_name(log_path.name + ".1"))

        argv = [
            str(installation.binary),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            # Readiness must not depend on a model that failed to load: Conch reports
            # per-model state itself.
            "--strict-readiness=false",
            "--exit-on-error=false",
            "--log-verbose=0",
        ]
        argv += [f"--load-model={name}" for name in self.load_models]
        if self.trace_url is not None:
            argv += trace_arguments(self.trace_url)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p
            for p in (
                str(installation.libs_dir),
                str(installation.libpython_dir),
                env.get("LD_LIBRARY_PATH", ""),
            )
            if p
        )
        env[SITE_PACKAGES_ENV] = os.pathsep.join(_site_packages())
        self._process = ManagedProcess("tritonserver", argv, log_path=log_path, env=env)
        self._process.spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        live = f"http://{self.host}:{self.http_port}/v2/health/live"
        try:
            self._process.wait_ready(lambda: http_ok(live), self.startup_timeout_s)
        except ProcessExited as exc:
            raise TritonStartError(
                f"tritonserver exited with code {exc.code} during start-up: "
                f"{_last_error(self._process.log_path)}"
            ) from None
        except TimeoutError:
            raise TritonStartError(
                f"tritonserver was not live within {self.startup_timeout_s:.0f}s "
                f"(log: {self._process.log_path})"
            ) from None

    def stop(self) -> None:
        if self._process is not None:
            # A server that died cannot free its stubs' shared memory: it is ours to.
            died = self._process.exit_code() is not None
            regions = _stub_shm_regions(self._process.group_members()) if died else []
            self._process.stop()  # the stubs go with it: they are in its process group
            self._process = None
            for region in regions:
                region.unlink(missing_ok=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def trace_arguments(url: str) -> list[str]:
    """Triton's OpenTelemetry tracing, exporting to `url` (OTLP/HTTP; Triton sends
    JSON). Rate 0: Triton samples nothing by itself, and traces every request that
    carries a trace context (so exactly those the control plane sampled), each span
    a child of the caller's."""
    return [
        "--trace-config=mode=opentelemetry",
        f"--trace-config=opentelemetry,url={url}",
        "--trace-config=rate=0",
        "--trace-config=count=-1",
        "--trace-config=level=TIMESTAMPS",
    ]


def _assemble_backends(installation: TritonInstallation, target: Path) -> Path:
    """pytriton's Python backend plus Conch's Python-based backends, in one directory."""
    python_dir = target / "python"
    python_dir.mkdir(parents=True)
    # Copies, not links: Triton refuses a backend library that resolves outside
    # its backend directory, and the stub must sit next to it, built for this Python.
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(installation.python_backend_dir / name, python_dir / name)
    shutil.copy2(installation.stub, python_dir / "triton_python_backend_stub")
    for backend in sorted(BACKENDS_SOURCE_DIR.iterdir()):
        if (backend / "model.py").is_file():
            (target / backend.name).symlink_to(backend, target_is_directory=True)
    return target


def _stub_shm_regions(pids: list[int]) -> list[Path]:
    regions = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if len(argv) > 2 and argv[0].endswith(_STUB_NAME.encode()):
            name = argv[2].decode(errors="replace")
            if name.startswith("triton_") and "/" not in name:
                regions.append(_SHM_DIR / name)
    return regions


def _site_packages() -> list[str]:
    paths = [*site.getsitepackages()]
    user = site.getusersitepackages()
    if user and Path(user).is_dir():
        paths.append(user)
    return paths


def _last_error(log_path: Path) -> str:
    lines = [line for line in tail(log_path, 40).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("E") or "error" in line.lower():
            return line.strip()
    return lines[-1].strip() if lines else f"no output (log: {log_path})"
