"""One typed settings object for the whole control plane.

Environment variables keep the names of the service Conch replaces (seed 000):
INFERENCE_PORT, INFERENCE_MAX_LOADED_MODELS, INFERENCE_RATE_LIMIT, DATABASE_URL,
SECRET_KEY, MODEL_EVENTS_REDIS_URL. Conch's own knobs are prefixed CONCH_.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conch_manifest.locations import default_model_repository, state_dir
from control_plane.core import secret_rules

# Public (it is in this repository): accepted only with CONCH_ENVIRONMENT=development on
# a loopback CONCH_HOST; everywhere else Settings refuses to be built with it.
DEVELOPMENT_SECRET_KEY = "conch-development-secret-do-not-use-in-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONCH_", extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = "development"
    # The address the control plane listens on (`conch serve --host` sets it; set it
    # yourself when running uvicorn directly): decides whether the development key may
    # be used. Unknown (None), the app answers with that key on loopback only
    # (core/loopback.py).
    host: str | None = None

    # --- seed 000 variables (unprefixed) ---
    inference_port: int = Field(8081, validation_alias=AliasChoices("INFERENCE_PORT"))
    max_loaded_models: int = Field(
        10, ge=1, validation_alias=AliasChoices("INFERENCE_MAX_LOADED_MODELS")
    )
    rate_limit: str = Field("100/minute", validation_alias=AliasChoices("INFERENCE_RATE_LIMIT"))
    database_url: str = Field(
        default_factory=lambda: f"sqlite+aiosqlite:///{state_dir() / 'conch.db'}",
        validation_alias=AliasChoices("DATABASE_URL"),
    )
    secret_key: SecretStr = Field(
        SecretStr(DEVELOPMENT_SECRET_KEY), validation_alias=AliasChoices("SECRET_KEY")
    )
    # Redis for rate limits and features; model events may live elsewhere (seed: db 3).
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL"))
    model_events_redis_url: str | None = Field(
        None, validation_alias=AliasChoices("MODEL_EVENTS_REDIS_URL")
    )
    model_events_channel: str = "conch:model_events"

    # --- Triton ---
    triton_grpc_url: str = "127.0.0.1:8001"
    triton_http_url: str | None = None  # host:port; `conch serve` sets it for its Triton
    triton_timeout_s: float = 10.0
    # Predictions reach Triton over HTTP with binary tensors (cheaper per call in
    # Python than grpc.aio, measured: triton/http_infer.py) or over gRPC; "auto"
    # takes HTTP whenever Triton's HTTP address is known.
    triton_infer_protocol: Literal["auto", "http", "grpc"] = "auto"
    # Triton calls per model outstanding at once before concurrent prediction rows are
    # merged into the next call (triton/coalesce.py); 0 sends every request alone.
    coalesce_in_flight: int = Field(4, ge=0)
    model_repository: Path = Field(default_factory=default_model_repository)

    # --- behaviour ---
    # Larger request bodies answer 413; they are read only after the key is checked.
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    rate_limit_enabled: bool = True
    # Serve the prediction endpoints through the lean ASGI handler (inference/lane.py)
    # instead of FastAPI's routing; off, FastAPI serves them with identical results.
    fast_lane: bool = True
    # Per-process limit used only while Redis is unreachable.
    rate_limit_fallback: str = "100/minute"
    key_cache_ttl_s: float = 30.0
    # How long a replica trusts its cached routing tables and model runtimes when an
    # event that should have dropped them was lost (events drop them at once).
    cache_ttl_s: float = Field(5.0, gt=0)
    # How often each replica converges its Triton on SQL (events are only a shortcut).
    reconcile_interval_s: float = Field(30.0, gt=0)
    model_load_timeout_s: float = 60.0
    # How long a predict waits for a cold model before answering 503 + Retry-After.
    model_load_wait_s: float = Field(10.0, gt=0)

    @field_validator("rate_limit", "rate_limit_fallback")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        parse_rate(value)
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
        if self.environment == "development" and (
            self.host is None or secret_rules.is_loopback(self.host)
        ):
            return self  # nobody else can reach this server: any key will do
        where = f"CONCH_ENVIRONMENT={self.environment}, CONCH_HOST={self.host}"
        secret = self.secret_key.get_secret_value()
        if secret == DEVELOPMENT_SECRET_KEY:
            raise ValueError(
                f"SECRET_KEY is unset ({where}): the built-in development key is accepted "
                "only with CONCH_ENVIRONMENT=development on a loopback CONCH_HOST; set "
                f"SECRET_KEY to a random value ({secret_rules.RULE}), e.g. the output of "
                f"{secret_rules.GENERATE_HINT}"
            )
        weakness = secret_rules.weakness(secret)
        if weakness is not None:
            raise ValueError(
                f"SECRET_KEY is too weak ({where}): {weakness}; outside development on "
                f"loopback it needs {secret_rules.RULE}, e.g. the output of "
                f"{secret_rules.GENERATE_HINT}"
            )
        return self

    @model_validator(mode="after")
    def _http_needs_its_address(self) -> Settings:
        if self.triton_infer_protocol == "http" and not self.triton_http_url:
            raise ValueError("CONCH_TRITON_INFER_PROTOCOL=http needs CONCH_TRITON_HTTP_URL")
        return self

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
    def events_redis_url(self) -> str | None:
        return self.model_events_redis_url or self.redis_url


_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@lru_cache(maxsize=1024)  # called on every rate-limited request with a handful of values
def parse_rate(rate: str) -> tuple[int, float]:
    """'100/minute' -> (100, 60.0). Also accepts '10/second', '5/2minute' is not supported."""
    try:
        count_text, unit = rate.strip().split("/", 1)
        count = int(count_text)
        unit = unit.strip().lower().rstrip("s")
        period = _UNITS[unit]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"rate {rate!r} is not of the form N/second|minute|hour|day") from exc
    if count < 1:
        raise ValueError(f"rate {rate!r} must allow at least one request")
    return count, period


def async_database_url(url: str) -> str:
    """Accept plain URLs (postgresql://, sqlite:///) and pick the async driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


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
