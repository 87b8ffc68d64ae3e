"""The embedded stack: Redis and Triton started by Conch, torn down together.

`conch serve` and `conch demo` use it; so do tests that need whole replicas.
Each piece is replaced by an external server when its URL is given (REDIS_URL,
`--triton-url`), which is how production runs (NGC Triton container, managed Redis).
The embedded pieces are supervised: one that dies is started again on the same
ports (core/supervisor.py). Scratch directories that a killed run left behind are
removed at start. The embedded Redis is throwaway unless `redis_data_dir` is given:
`conch serve` gives `<state>/redis-data`, so queued tasks outlive a restart; the
demo and tests keep a fresh, empty one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from conch_embedded.process import Service
from conch_embedded.redis_server import EmbeddedRedis
from conch_embedded.run_dirs import remove_stale_run_dirs
from conch_embedded.supervisor import BackoffPolicy, Supervised, Supervisor
from conch_embedded.triton_server import EmbeddedTriton

# Under the state directory; not a scratch directory's name (run_dirs.py), so never swept.
REDIS_DATA_DIR = "redis-data"


@dataclass
class StackConfig:
    model_repository: Path
    triton_url: str | None = None  # external Triton gRPC host:port
    triton_http_url: str | None = None  # external Triton HTTP host:port
    redis_url: str | None = None  # external Redis
    redis_data_dir: Path | None = None  # the embedded Redis persists here (None: throwaway)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    load_models: list[str] = field(default_factory=list)
    trace_url: str | None = None  # the embedded Triton's spans go there (OTLP/HTTP)
    restart_policy: BackoffPolicy = field(default_factory=BackoffPolicy)


@dataclass
class EmbeddedStack(Service):
    config: StackConfig
    triton: EmbeddedTriton | None = field(default=None, init=False)
    redis: EmbeddedRedis | None = field(default=None, init=False)
    supervisor: Supervisor | None = field(default=None, init=False)
    _exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, init=False)

    @property
    def triton_grpc_url(self) -> str:
        if self.triton is not None:
            return self.triton.grpc_url
        assert self.config.triton_url is not None
        return self.config.triton_url

    @property
    def triton_http_url(self) -> str:
        if self.triton is not None:
            return self.triton.http_url
        return self.config.triton_http_url or ""

    @property
    def triton_metrics_url(self) -> str | None:
        return self.triton.metrics_url if self.triton is not None else None

    @property
    def redis_url(self) -> str:
        if self.redis is not None:
            return self.redis.url
        assert self.config.redis_url is not None
        return self.config.redis_url

    def start(self) -> EmbeddedStack:
        remove_stale_run_dirs()
        try:
            if self.config.redis_url is None:
                redis = EmbeddedRedis(data_dir=self.config.redis_data_dir)
                self.redis = self._exits.enter_context(redis)
            if self.config.triton_url is None:
                self.triton = self._exits.enter_context(
                    EmbeddedTriton(
                        self.config.model_repository,
                        http_port=self.config.http_port,
                        grpc_port=self.config.grpc_port,
                        metrics_port=self.config.metrics_port,
                        host=self.config.host,
                        load_models=list(self.config.load_models),
                        trace_url=self.config.trace_url,
                    )
                )
        except BaseException:
            self.stop()
            raise
        children: list[Supervised] = [s for s in (self.redis, self.triton) if s is not None]
        if children:
            self.supervisor = Supervisor(children, self.config.restart_policy).start()
        return self

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()  # no restart during the shutdown; it stops them
            self.supervisor = None
        self._exits.close()
