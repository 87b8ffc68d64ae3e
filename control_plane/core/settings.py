"""One typed settings object for the whole control plane.

Environment variables keep the names of the service Conch replaces (seed 000):
INFERENCE_PORT, INFERENCE_MAX_LOADED_MODELS, INFERENCE_RATE_LIMIT, DATABASE_URL,
SECRET_KEY, MODEL_EVENTS_REDIS_URL (and REDIS_URL). Conch's own knobs are prefixed
CONCH_. Every timeout, TTL and size that changes behaviour is a field here, passed
in where its component is built (app.py's lifespan), never a module constant.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pydantic
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conch_manifest.locations import default_model_repository, state_dir
from control_plane.core.callback_hosts import CallbackAllowList
from control_plane.core.setting_values import DEVELOPMENT_SECRET_KEY as DEVELOPMENT_SECRET_KEY
from control_plane.core.setting_values import (
    async_database_url,
    parse_rate,
    secret_key_refusal,
)


class Settings(BaseSettings):
    """Every knob of the control plane, grouped by concern.

    Each field is read from `CONCH_<FIELD NAME>` unless it names its own variable
    (the seed 000 names). Bounds refuse a nonsensical value at start, in one line.
    """

    model_config = SettingsConfigDict(env_prefix="CONCH_", extra="ignore", populate_by_name=True)

    # --- deployment: where and as what this process runs ---
    environment: Literal["development", "test", "production"] = Field(
        "development", description="`development`, `test` or `production`"
    )
    # Decides whether the development key may be used. Unknown (None), the app answers
    # with that key on loopback only (core/loopback.py).
    host: str | None = Field(
        None,
        description="address the control plane listens on (`conch serve --host` sets it; "
        "set it yourself when running uvicorn directly)",
    )
    inference_port: int = Field(
        8081,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("INFERENCE_PORT"),
        description="control-plane port",
    )

    # --- security ---
    secret_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_SECRET_KEY),
        validation_alias=AliasChoices("SECRET_KEY"),
        description="HMAC key for API keys; outside development on loopback it must be strong",
    )
    # last_used_at is bookkeeping: one write per key per replica per minute is plenty.
    key_last_used_interval_s: float = Field(
        60.0, gt=0, description="at most one `last_used_at` write per key per replica per this"
    )

    # --- Triton: where predictions go and how ---
    triton_grpc_url: str = Field(
        "127.0.0.1:8001",
        min_length=1,
        description="Triton the control plane drives (loads, unloads, statistics)",
    )
    triton_http_url: str | None = Field(
        None,
        description="Triton's HTTP host:port (`conch serve` sets it for its Triton); "
        "when known, predictions go there with binary tensors",
    )
    triton_timeout_s: float = Field(
        10.0, gt=0, description="an inference Triton does not answer within this is a 504"
    )
    # HTTP with binary tensors is cheaper per call in Python than grpc.aio (measured:
    # triton/http_infer.py).
    triton_infer_protocol: Literal["auto", "http", "grpc"] = Field(
        "auto", description="`http`, `grpc`, or `auto` (HTTP whenever its address is known)"
    )
    coalesce_in_flight: int = Field(
        4,
        ge=0,
        description="Triton calls per model outstanding before concurrent prediction rows "
        "are merged into the next call (triton/coalesce.py); 0 sends every request alone",
    )
    # A bound lets urgent predictions overtake low ones on a saturated replica
    # (model_core/admission.py); 0 admits every prediction at once.
    predict_admission_limit: int = Field(
        0, ge=0, description="seed 002 predictions inside the model core at once, by priority"
    )
    model_repository: Path = Field(
        default_factory=default_model_repository, description="Triton's repository root"
    )
    # Off, FastAPI serves the same endpoints with identical results.
    fast_lane: bool = Field(
        True, description="serve the prediction endpoints through the lean ASGI handler"
    )
    triton_liveness_timeout_s: float = Field(
        2.0, gt=0, description="Triton not answering a liveness check in this counts as down"
    )
    # Triton's unload returns before the model is gone: its index is polled until it is.
    triton_unload_wait_s: float = Field(
        30.0, gt=0, description="a model Triton still holds this long after its unload is a 504"
    )
    triton_unload_poll_s: float = Field(
        0.05, gt=0, description="how often Triton's index is read while an unload completes"
    )
    triton_probe_concurrency: int = Field(
        16,
        ge=1,
        description="per-model readiness probes in flight when Triton refuses its "
        "repository index (one bad entry makes it refuse the whole index)",
    )

    # --- caches: what a replica keeps of what it read from SQL and disk ---
    key_cache_ttl_s: float = Field(
        30.0,
        ge=0,
        description="how long a verified API key is trusted without SQL "
        "(`key_revoked` events drop it at once)",
    )
    key_cache_max_entries: int = Field(
        10_000, ge=1, description="verified API keys one process caches (oldest dropped)"
    )
    # Events drop the entries at once; the TTL bounds staleness when an event is lost.
    cache_ttl_s: float = Field(
        5.0,
        gt=0,
        description="how long a replica trusts cached routing tables and model handles "
        "when an event that should have dropped them was lost",
    )
    runtime_cache_max_entries: int = Field(
        256, ge=1, description="model handles (input shapes, labels) one process caches"
    )
    # Manifests of a registered name never change: entries leave on `model_deleted`.
    manifest_cache_max_entries: int = Field(
        1024, ge=1, description="parsed model manifests one process keeps (oldest dropped)"
    )

    # --- health and readiness: how long a probe may take before it says "down" ---
    health_probe_timeout_s: float = Field(
        1.0, gt=0, description="`/inference/health` reports SQL or Redis down past this"
    )
    readiness_triton_timeout_s: float = Field(
        2.0, gt=0, description="`/inference/ready` is 503 when Triton's index takes longer"
    )
    # `/api/inference/health` (seed 002) judges measured figures against these.
    health_memory_degraded_percent: float = Field(
        95.0, gt=0, le=100, description="host memory in use at or above which health is degraded"
    )
    health_error_rate_degraded: float = Field(
        0.05,
        gt=0,
        description="share of failed predictions over the recent window at or above which "
        "health is degraded (above 1: never)",
    )
    # Triton answers its index and statistics slowly while it loads models.
    monitoring_triton_timeout_s: float = Field(
        2.0,
        gt=0,
        description="seed 002's metrics report a Triton figure (models ready, memory) as "
        "null when Triton takes longer to give it",
    )

    # --- limits: request size and rate ---
    # Larger request bodies answer 413; they are read only after the key is checked.
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="larger request bodies answer 413"
    )
    rate_limit: str = Field(
        "100/minute",
        validation_alias=AliasChoices("INFERENCE_RATE_LIMIT"),
        description="per-API-key limit, N/second|minute|hour|day (per-key overrides in the key)",
    )
    rate_limit_enabled: bool = Field(True, description="switch rate limiting off (benchmarks)")
    rate_limit_fallback: str = Field(
        "100/minute", description="per-process limit used only while Redis is unreachable"
    )
    # Do not pay a connect timeout on every request while Redis is down.
    rate_limit_redis_retry_s: float = Field(
        2.0, gt=0, description="after a Redis failure, count in-process this long before retrying"
    )
    rate_limit_warn_interval_s: float = Field(
        30.0, gt=0, description="at most one 'Redis unreachable' warning per this"
    )
    rate_limit_max_tracked_keys: int = Field(
        10_000,
        ge=1,
        description="API keys whose in-process limiter state (refusal, fallback window) "
        "one process keeps (least recently used dropped)",
    )

    # --- Redis: rate limits and features ---
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL"),
        description="rate limits and events (redis://, rediss://, unix://); unset: none",
    )
    # Short: a stalled Redis must cost a request milliseconds, not seconds.
    redis_timeout_s: float = Field(
        0.5, gt=0, description="a request's Redis command (rate limit) not answered in this fails"
    )
    redis_connect_timeout_s: float = Field(
        0.5, gt=0, description="connecting to Redis for a request gives up after this"
    )
    redis_health_check_interval_s: int = Field(
        30, ge=0, description="idle Redis connections are checked before use after this; 0 never"
    )

    # --- events: model, slot and key changes between replicas (Redis Pub/Sub) ---
    model_events_redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("MODEL_EVENTS_REDIS_URL"),
        description="Redis for model events (seed 000 used db 3); unset: REDIS_URL",
    )
    model_events_channel: str = Field(
        "conch:model_events", min_length=1, description="Pub/Sub channel"
    )
    # The subscriber has no read timeout (it blocks on an idle channel by design);
    # keepalive and REDIS_HEALTH_CHECK_INTERVAL_S notice a dead connection.
    events_connect_timeout_s: float = Field(
        2.0, gt=0, description="connecting to the events Redis gives up after this"
    )
    events_publish_timeout_s: float = Field(
        2.0, gt=0, description="a publish not acknowledged in this is logged and dropped"
    )
    events_reconnect_min_s: float = Field(
        0.5, gt=0, description="first wait before the listener resubscribes after losing Redis"
    )
    events_reconnect_max_s: float = Field(
        10.0, gt=0, description="the listener's wait doubles up to this"
    )
    events_dedupe_size: int = Field(
        1024, ge=1, description="event ids remembered to drop duplicate deliveries"
    )

    # --- SQL ---
    database_url: str = Field(
        default_factory=lambda: f"sqlite+aiosqlite:///{state_dir() / 'conch.db'}",
        validation_alias=AliasChoices("DATABASE_URL"),
        description="any SQLAlchemy URL (plain postgresql:// and sqlite:/// accepted)",
    )
    sql_pool_size: int = Field(
        10, ge=1, description="connections kept open per process (PostgreSQL)"
    )
    sql_max_overflow: int = Field(
        10, ge=0, description="connections opened beyond the pool under load (PostgreSQL)"
    )
    sqlite_busy_timeout_s: float = Field(
        30.0, gt=0, description="a SQLite write waits this long for another writer's lock"
    )

    # --- lifecycle and reconcile: which models Triton holds ---
    max_loaded_models: int = Field(
        10,
        ge=1,
        validation_alias=AliasChoices("INFERENCE_MAX_LOADED_MODELS"),
        description="unpinned models a replica keeps loaded (least recently used evicted)",
    )
    # Events are only a shortcut: SQL is the source of truth.
    reconcile_interval_s: float = Field(
        30.0, gt=0, description="how often each replica converges its Triton on SQL"
    )
    model_load_timeout_s: float = Field(
        60.0, gt=0, description="a model load Triton does not finish within this fails"
    )
    model_load_wait_s: float = Field(
        10.0, gt=0, description="how long a predict waits for a cold model before 503"
    )
    # Each load attempt costs Triton a backend process and seconds of CPU.
    load_retry_min_s: float = Field(
        5.0, gt=0, description="first wait before a model that failed to load is retried"
    )
    load_retry_max_s: float = Field(
        60.0, gt=0, description="the retry wait doubles after each failed load up to this"
    )
    # A half-loaded model must not linger.
    failed_load_unload_wait_s: float = Field(
        5.0, gt=0, description="a model that failed to load or warm is unloaded, waiting this"
    )
    triton_watch_interval_s: float = Field(
        1.0,
        gt=0,
        description="how often Triton's liveness is checked: a restart is "
        "reconciled within about this",
    )
    # Each stays unloaded by reconciliation: memory must stay flat however many are deleted.
    deleted_models_remembered: int = Field(
        4096, ge=1, description="deleted model names refused by each replica (oldest forgotten)"
    )

    # --- model import: `POST /api/inference/models/load` exports a file the server reads ---
    # Unset, the endpoint is off: a server must not read files it was not told it may.
    import_dir: Path | None = Field(
        None, description="directory model files are imported from; unset: import is off"
    )
    # Unpickling runs code stored in the file, with the control plane's rights.
    allow_pickle_import: bool = Field(
        False, description="also import pickles/joblib files (sklearn, pickled boosters)"
    )
    import_wait_s: float = Field(
        120.0, gt=0, description="an import still exporting after this answers 202 and a job id"
    )
    import_timeout_s: float = Field(
        900.0, gt=0, description="an export child process running longer than this is killed"
    )
    import_concurrency: int = Field(
        2, ge=1, description="exports run at once (each starts a private parity Triton)"
    )
    import_jobs_remembered: int = Field(
        256, ge=1, description="finished import jobs kept for polling (oldest dropped)"
    )
    import_job_ttl_s: int = Field(
        86_400, ge=1, description="how long any replica can read an import job after it ran"
    )

    # --- async tasks: `POST /api/inference/predict/async`, durable in Redis Streams ---
    task_workers: int = Field(
        16, ge=0, description="tasks one replica runs at once (0: this replica runs none)"
    )
    task_max_per_key: int = Field(
        1000, ge=1, description="tasks one API key may have queued or running (429 beyond)"
    )
    task_max_queued: int = Field(
        100_000, ge=1, description="tasks queued or running in all (503 beyond)"
    )
    task_result_ttl_s: int = Field(
        86_400, ge=1, description="a finished task (and its Idempotency-Key) is kept this long"
    )
    # Longer than any task runs: a running replica renews its claim every third of it.
    task_claim_after_s: float = Field(
        30.0, gt=0, description="a task its replica stopped renewing is taken over after this"
    )
    # One level's turn in ten goes to the longest-waiting lower level: low still moves.
    task_starvation_every: int = Field(
        10, ge=2, description="every Nth take serves the lowest waiting level first"
    )

    # --- streams: `/api/inference/stream/...` sessions, durable in Redis ---
    stream_idle_ttl_s: int = Field(
        600, ge=1, description="a stream without sends or reads expires after this, results too"
    )
    stream_max_per_key: int = Field(
        100, ge=1, description="open streams one API key may have (429 beyond)"
    )
    stream_max_pending_rows: int = Field(
        10_000, ge=1, description="rows one stream may have buffered or in flight (429 beyond)"
    )
    stream_max_results: int = Field(
        100_000, ge=1, description="results one stream keeps; the oldest are dropped beyond"
    )
    # Also the precision of batch_timeout_ms: a due buffer waits at most this much longer.
    stream_flush_poll_s: float = Field(
        0.005, gt=0, description="how often a replica looks for buffers past batch_timeout_ms"
    )
    stream_flush_claim_after_s: float = Field(
        30.0, gt=0, description="rows a replica took but did not answer are flushed again then"
    )
    stream_ws_auth_timeout_s: float = Field(
        5.0, gt=0, description='a WebSocket without a key header must send {"api_key"} within this'
    )

    # --- callbacks: an async task's result POSTed to its callback_url, signed ---
    # Empty, callbacks are off: a server must not POST to hosts it was not told it may.
    callback_allowed_hosts: str = Field(
        "",
        description="hosts a callback_url may name, comma-separated: host, host:port, "
        "*.domain, IP (core/callback_hosts.py); only an exact entry may be a private "
        "address; empty: callbacks are refused",
    )
    callback_timeout_s: float = Field(
        5.0, gt=0, description="one callback attempt not answered within this is retried"
    )
    callback_retry_for_s: float = Field(
        300.0,
        ge=0,
        description="a callback is retried (backing off) until this long after its first "
        "attempt, then marked failed; 0: one attempt",
    )

    # --- console: the web console at /console (control_plane/console) ---
    console_session_ttl_s: int = Field(
        8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="a console session's life; never beyond its key's own expiry",
    )
    # Behind a proxy that ends TLS the app sees plain HTTP: say so here.
    console_secure_cookie: bool | None = Field(
        None,
        description="mark the session cookie Secure: true, false, or unset to follow the "
        "request's scheme (https: Secure)",
    )
    console_trend_days: int = Field(30, ge=1, le=366, description="days shown by the A/B trend")
    console_trend_max_slots: int = Field(
        8, ge=1, le=50, description="slots drawn in the trend: the control and the busiest"
    )

    # --- logs (core/access_log.py) ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO",
        validation_alias=AliasChoices("LOG_LEVEL"),
        description="the least severe level logged; WARNING and above also silence "
        "the access lines (INFO)",
    )
    # None: JSON lines (what log collectors parse) except in development.
    log_format: Literal["json", "console"] | None = Field(
        None,
        validation_alias=AliasChoices("LOG_FORMAT"),
        description="`json` (one object per line) or `console`; unset: `console` in "
        "development, `json` elsewhere",
    )
    access_log: bool = Field(
        True, description="one INFO line per request (route, status, latency, model, key id)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return (value.lower() or None) if isinstance(value, str) else value

    # --- traces: OpenTelemetry over OTLP/HTTP (core/tracing.py); the SDK reads the
    # other OTEL_* variables itself ---
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="an OTLP/HTTP collector (e.g. http://collector:4318): set, each "
        "request's spans go to its /v1/traces, and Triton's calls carry the trace",
    )
    otlp_traces_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="the whole URL spans are posted to, instead of "
        "OTEL_EXPORTER_OTLP_ENDPOINT's /v1/traces",
    )

    @field_validator("otlp_endpoint", "otlp_traces_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # `OTEL_EXPORTER_OTLP_ENDPOINT=` means "not set"
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
        return value

    @field_validator("rate_limit", "rate_limit_fallback")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("callback_allowed_hosts")
    @classmethod
    def _valid_hosts(cls, value: str) -> str:
        CallbackAllowList.parse(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("secret_key")
    @classmethod
    def _empty_secret_is_unset(cls, value: SecretStr) -> SecretStr:
        # `SECRET_KEY=` in an env file means "not set", never "an empty HMAC key".
        return value if value.get_secret_value() else SecretStr(DEVELOPMENT_SECRET_KEY)

    @model_validator(mode="after")
    def _refuse_weak_secret(self) -> Settings:
        refusal = secret_key_refusal(
            self.environment, self.host, self.secret_key.get_secret_value()
        )
        if refusal is not None:
            raise ValueError(refusal)
        return self

    @model_validator(mode="after")
    def _http_needs_its_address(self) -> Settings:
        if self.triton_infer_protocol == "http" and not self.triton_http_url:
            raise ValueError("CONCH_TRITON_INFER_PROTOCOL=http needs CONCH_TRITON_HTTP_URL")
        return self

    @model_validator(mode="after")
    def _backoff_grows(self) -> Settings:
        for low, high in (
            ("events_reconnect_min_s", "events_reconnect_max_s"),
            ("load_retry_min_s", "load_retry_max_s"),
        ):
            if getattr(self, high) < getattr(self, low):
                raise ValueError(
                    f"{_variable(high)} ({getattr(self, high)}) is below "
                    f"{_variable(low)} ({getattr(self, low)})"
                )
        return self

    @property
    def log_output(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "console" if self.environment == "development" else "json"

    @property
    def uses_development_secret(self) -> bool:
        return self.secret_key.get_secret_value() == DEVELOPMENT_SECRET_KEY

    @property
    def triton_infer_http_url(self) -> str | None:
        """Where predictions go over HTTP; None: over gRPC."""
        return None if self.triton_infer_protocol == "grpc" else self.triton_http_url

    @property
    def deployment_id(self) -> str:
        """Stable per database: namespaces shared-Redis keys of this deployment."""
        return hashlib.sha256(self.database_url.encode()).hexdigest()[:12]

    @property
    def callback_allow_list(self) -> CallbackAllowList:
        return CallbackAllowList.parse(self.callback_allowed_hosts)

    @property
    def events_redis_url(self) -> str | None:
        return self.model_events_redis_url or self.redis_url


def default(field: str) -> Any:
    """A setting's default, for components built without Settings (tools, tests):
    the value lives once, in the field."""
    return Settings.model_fields[field].get_default(call_default_factory=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_error_line(exc: pydantic.ValidationError) -> str:
    """Every problem of a refused Settings on one line, naming the variables to set."""
    problems = []
    for error in exc.errors():
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if error["type"] == "value_error" and cause else error["msg"]
        if error["loc"]:
            message = f"{_variable(str(error['loc'][0]))}: {message}"
        problems.append(message)
    return "invalid settings: " + "; ".join(problems)


def _variable(location: str) -> str:
    # pydantic reports a prefixed field by its name, an aliased one by the alias it read.
    if location in Settings.model_fields:
        return f"{Settings.model_config.get('env_prefix', '')}{location}".upper()
    return location
