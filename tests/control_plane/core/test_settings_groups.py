"""Every knob is a documented, bounded setting read from its environment variable,
and the components are built with it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydantic
import pytest
from typer.testing import CliRunner

from conch_manifest.locations import PROJECT_ROOT
from control_plane.app import create_app
from control_plane.cli import with_commands
from control_plane.core.settings import Settings, get_settings, settings_error_line
from control_plane.events.bus import EventBus
from control_plane.events.schemas import KeyRevoked
from control_plane.lifecycle.registered import RegistrationGuard
from control_plane.lifecycle.status import ModelStatus
from control_plane.state import AppState
from tests.control_plane.secret_key import random_secret_key


def _variables(field: str) -> list[str]:
    """The environment variables a field is read from."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, pydantic.AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"CONCH_{field.upper()}"]


ALL_VARIABLES = {name for field in Settings.model_fields for name in _variables(field)}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only what a test sets counts: the runner's own variables must not decide."""
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_is_described(field: str) -> None:
    description = Settings.model_fields[field].description
    assert description and len(description) > 10, f"{field} has no description"


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_is_in_the_readme_table(field: str) -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert f"| `{_variables(field)[0]}` |" in section, f"README lacks {_variables(field)[0]}"


README = (PROJECT_ROOT / "README.md").read_text()

# Fields whose values are constrained beyond their type; any other string will do.
OTHER_VALUES = {
    "environment": "test",
    "host": "127.0.0.2",
    "triton_infer_protocol": "grpc",
    "rate_limit": "7/second",
    "rate_limit_fallback": "7/second",
    "otlp_endpoint": "http://collector.example:4318",
    "otlp_traces_endpoint": "http://collector.example:4318/v1/traces",
    "log_level": "WARNING",
    "log_format": "console",
    "console_secure_cookie": "True",
}


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_is_read_from_its_variable(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value other than the default, set in the environment, is what Settings holds."""
    if field != "secret_key":  # so that any environment and host are accepted
        monkeypatch.setenv("SECRET_KEY", random_secret_key())
    default = getattr(Settings(), field)
    if isinstance(default, bool):
        other: object = not default
    elif isinstance(default, int | float):
        other = default + 1
    else:
        other = OTHER_VALUES.get(field, f"elsewhere-{field}")
    variable = _variables(field)[0]
    monkeypatch.setenv(variable, str(other).lower() if isinstance(other, bool) else str(other))
    value = getattr(Settings(), field)
    if isinstance(value, pydantic.SecretStr):
        value = value.get_secret_value()
    assert str(value) == str(other) != str(default), f"{variable} did not set {field}"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONCH_REDIS_TIMEOUT_S", "0", ": Input should be greater than 0"),
        ("CONCH_SQL_POOL_SIZE", "0", ": Input should be greater than or equal to 1"),
        ("CONCH_EVENTS_DEDUPE_SIZE", "-3", ": Input should be greater than or equal to 1"),
        ("CONCH_KEY_CACHE_MAX_ENTRIES", "many", ": Input should be a valid integer"),
        ("INFERENCE_PORT", "70000", ": Input should be less than or equal to 65535"),
        ("CONCH_EVENTS_RECONNECT_MAX_S", "0.1", " (0.1) is below CONCH_EVENTS_RECONNECT_MIN_S"),
        ("CONCH_LOAD_RETRY_MAX_S", "1", " (1.0) is below CONCH_LOAD_RETRY_MIN_S (5.0)"),
        ("CONCH_TRITON_UNLOAD_WAIT_S", "0", ": Input should be greater than 0"),
        ("CONCH_TRITON_PROBE_CONCURRENCY", "0", ": Input should be greater than or equal to 1"),
        ("CONCH_MANIFEST_CACHE_MAX_ENTRIES", "0", ": Input should be greater than or equal to 1"),
        ("CONCH_HEALTH_PROBE_TIMEOUT_S", "-1", ": Input should be greater than 0"),
    ],
)
def test_a_value_out_of_bounds_is_refused_naming_its_variable(
    variable: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(pydantic.ValidationError) as refused:
        create_app()
    line = settings_error_line(refused.value)
    assert "\n" not in line
    assert line.startswith(f"invalid settings: {variable}{message}"), line


def test_a_command_refuses_a_bad_value_before_starting(tmp_path: Path) -> None:
    env = {
        "CONCH_RATE_LIMIT_REDIS_RETRY_S": "-1",
        "DATABASE_URL": f"sqlite:///{tmp_path}/conch.db",
        "SECRET_KEY": None,
        "CONCH_ENVIRONMENT": None,
        "CONCH_HOST": None,
    }
    result = CliRunner().invoke(with_commands(), ["db", "upgrade"], env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: invalid settings: CONCH_RATE_LIMIT_REDIS_RETRY_S: Input should be greater than 0\n"
    )


async def test_the_bus_forgets_event_ids_beyond_its_dedupe_size() -> None:
    seen: list[int] = []

    async def handler(event: KeyRevoked) -> None:
        seen.append(event.key_id)

    bus = EventBus(None, "unused", dedupe_size=2)
    bus.on("key_revoked", handler)
    first, *others = [KeyRevoked(key_id=i) for i in range(3)]
    await bus.dispatch(first)
    await bus.dispatch(first)  # remembered: dropped
    for event in others:
        await bus.dispatch(event)
    await bus.dispatch(first)  # pushed out by two newer ids: handled again
    assert seen == [0, 1, 2, 0]


async def test_the_app_builds_its_redis_clients_with_the_settings(settings: Settings) -> None:
    tuned = settings.model_copy(
        update={
            "redis_timeout_s": 0.25,
            "redis_connect_timeout_s": 0.75,
            "redis_health_check_interval_s": 7,
            "events_connect_timeout_s": 1.5,
            "model_events_channel": f"conch:settings-test:{uuid.uuid4().hex}",
        }
    )
    app = create_app(tuned, migrate=False)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.conch
        assert state.redis is not None and state.events.redis is not None
        requests = state.redis.connection_pool.connection_kwargs
        events = state.events.redis.connection_pool.connection_kwargs
    assert (requests["socket_timeout"], requests["socket_connect_timeout"]) == (0.25, 0.75)
    assert requests["health_check_interval"] == events["health_check_interval"] == 7
    assert events["socket_connect_timeout"] == 1.5
    assert events.get("socket_timeout") is None  # the subscriber blocks by design


def test_the_guard_forgets_deleted_names_beyond_its_size() -> None:
    guard = RegistrationGuard(None, max_remembered=2)  # type: ignore[arg-type]  # no SQL asked
    for name in ("a", "b", "c"):
        guard.mark_deleted(name)
    assert guard.deleted() == {"b", "c"}


def test_a_failed_load_backs_off_from_the_minimum_doubling_up_to_the_maximum() -> None:
    status = ModelStatus("m")
    waits = []
    for _ in range(4):
        before = time.monotonic()
        status.mark_failed("bad", retry_min_s=10.0, retry_max_s=30.0)
        waits.append(status.retry_at - before)
    assert [round(wait) for wait in waits] == [10, 20, 30, 30]


async def test_the_app_builds_its_lifecycle_and_gateway_with_the_settings(
    settings: Settings,
) -> None:
    tuned = settings.model_copy(
        update={
            "triton_liveness_timeout_s": 1.25,
            "triton_unload_wait_s": 7.0,
            "load_retry_min_s": 3.0,
            "load_retry_max_s": 9.0,
            "failed_load_unload_wait_s": 2.5,
            "triton_watch_interval_s": 0.5,
            "deleted_models_remembered": 2,
            # Far shorter than any round trip to SQL or Redis: both probes time out.
            "health_probe_timeout_s": 1e-6,
            "model_events_channel": f"conch:settings-test:{uuid.uuid4().hex}",
        }
    )
    app = create_app(tuned, migrate=False)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.conch
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://conch") as http:
            health = (await http.get("/inference/health")).json()
        for name in ("gone_1", "gone_2", "gone_3"):
            state.lifecycle.registration.mark_deleted(name)
        remembered = state.lifecycle.registration.deleted()
    assert (state.triton.liveness_timeout_s, state.triton.unload_wait_s) == (1.25, 7.0)
    lifecycle = state.lifecycle
    assert (lifecycle.retry_min_s, lifecycle.retry_max_s) == (3.0, 9.0)
    assert lifecycle.failed_unload_wait_s == 2.5
    assert state.reconciler.watch_triton_s == 0.5
    assert remembered == {"gone_2", "gone_3"}
    assert health["components"]["sql"] == health["components"]["redis"] == "down", health
