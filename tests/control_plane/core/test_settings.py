"""SECRET_KEY: the development key only in development on loopback, a strong key elsewhere."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator

import pydantic
import pytest

from control_plane.app import create_app
from control_plane.core import secret_rules
from control_plane.core.settings import (
    DEVELOPMENT_SECRET_KEY,
    Settings,
    get_settings,
    settings_error_line,
)
from tests.control_plane.secret_key import random_secret_key

LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"]
EXPOSED = ["0.0.0.0", "::", "10.1.2.3", "conch.example.com"]

# Each passes every check but the one it is named for.
LOW_ENTROPY = "".join("aaaaaaa" + letter for letter in "bcdefgh")  # 56 chars, 8 distinct
WEAK = {
    "short": "Xk9mP2vL7nQ4wR8t",
    "few distinct": "abcdabcdeabcdabcdeabcdabcdeabcdabcde"[:32] + "ddcc",
    "repeated pattern": "Xk9mP2vL7n" * 4,
    "run": "Xk9mP2vL7nQ4wR8t" + "12345678" + "zU6bN1cJ5hT0",
    "placeholder": "my-Change-Me-production-key-Xk9mP2vL7nQ4",
    "low entropy": LOW_ENTROPY,
}
STRONG = random_secret_key()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only what a test passes counts: the runner's own variables must not decide."""
    for name in ("SECRET_KEY", "CONCH_ENVIRONMENT", "CONCH_HOST"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _build(environment: str, host: str, secret: str | None) -> Settings:
    if secret is None:  # nothing set: the field's default, the development key
        return Settings(environment=environment, host=host)  # type: ignore[arg-type]
    return Settings(environment=environment, host=host, secret_key=secret)  # type: ignore[arg-type]


def _refusal(environment: str, host: str, secret: str | None) -> str:
    with pytest.raises(pydantic.ValidationError) as refused:
        _build(environment, host, secret)
    return settings_error_line(refused.value)


@pytest.mark.parametrize("host", LOOPBACK)
@pytest.mark.parametrize("secret", [None, "", DEVELOPMENT_SECRET_KEY, WEAK["short"], STRONG])
def test_development_on_loopback_accepts_any_key(host: str, secret: str | None) -> None:
    settings = _build("development", host, secret)
    expected = secret or DEVELOPMENT_SECRET_KEY  # empty means unset
    assert settings.secret_key.get_secret_value() == expected


@pytest.mark.parametrize(
    ("environment", "host"),
    [("development", host) for host in EXPOSED]
    + [(env, host) for env in ("test", "production") for host in LOOPBACK + EXPOSED],
)
@pytest.mark.parametrize("secret", [None, "", DEVELOPMENT_SECRET_KEY])
def test_the_development_key_is_refused_everywhere_else(
    environment: str, host: str, secret: str | None
) -> None:
    line = _refusal(environment, host, secret)
    assert "\n" not in line
    assert line.startswith("invalid settings: SECRET_KEY is unset")
    assert f"CONCH_ENVIRONMENT={environment}, CONCH_HOST={host}" in line
    assert secret_rules.RULE in line and "secrets.token_urlsafe" in line
    assert DEVELOPMENT_SECRET_KEY not in line


@pytest.mark.parametrize(
    ("environment", "host"),
    [("development", "0.0.0.0"), ("test", "127.0.0.1"), ("production", "0.0.0.0")],
)
@pytest.mark.parametrize("kind", WEAK)
def test_weak_keys_are_refused_outside_development_on_loopback(
    environment: str, host: str, kind: str
) -> None:
    line = _refusal(environment, host, WEAK[kind])
    assert "\n" not in line
    assert line.startswith("invalid settings: SECRET_KEY is too weak")
    assert secret_rules.RULE in line
    assert WEAK[kind] not in line  # the refused value is never printed


@pytest.mark.parametrize(("kind", "reason"), [
    ("short", "16 characters"), ("few distinct", "5 distinct"),
    ("repeated pattern", "repeats a shorter pattern"), ("run", "run of repeated or consecutive"),
    ("placeholder", "'changeme'"), ("low entropy", "estimated entropy is 50 bits"),
])  # fmt: skip
def test_the_refusal_says_what_is_wrong(kind: str, reason: str) -> None:
    assert reason in (secret_rules.weakness(WEAK[kind]) or "")


@pytest.mark.parametrize("environment", ["development", "test", "production"])
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_strong_key_is_accepted_everywhere(environment: str, host: str) -> None:
    assert _build(environment, host, STRONG).secret_key.get_secret_value() == STRONG


@pytest.mark.parametrize(
    "generate",
    [
        lambda rng: rng.randbytes(16).hex(),  # openssl rand -hex 16
        lambda rng: rng.randbytes(32).hex(),  # openssl rand -hex 32
        lambda rng: base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("="),
        lambda rng: base64.b64encode(rng.randbytes(24)).decode(),  # openssl rand -base64 24
    ],
)
def test_generated_keys_pass_the_rule(generate: Callable[[random.Random], str]) -> None:
    rng = random.Random(9)  # seeded: the same 3,000 keys on every run
    keys = [generate(rng) for _ in range(3000)]
    assert [k for k in keys if secret_rules.weakness(k)] == []


def test_the_environment_decides_as_keyword_arguments_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCH_ENVIRONMENT", "development")
    monkeypatch.setenv("CONCH_HOST", "0.0.0.0")
    with pytest.raises(pydantic.ValidationError, match="SECRET_KEY is unset"):
        Settings()
    monkeypatch.setenv("SECRET_KEY", STRONG)
    assert Settings().host == "0.0.0.0"


def test_create_app_refuses_the_development_key_in_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCH_ENVIRONMENT", "test")
    with pytest.raises(pydantic.ValidationError) as refused:
        create_app()
    assert settings_error_line(refused.value).startswith("invalid settings: SECRET_KEY is unset")


def test_other_problems_name_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCH_ENVIRONMENT", "staging")
    monkeypatch.setenv("INFERENCE_PORT", "eighty")
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings()
    line = settings_error_line(refused.value)
    assert "CONCH_ENVIRONMENT: Input should be 'development', 'test' or 'production'" in line
    assert "INFERENCE_PORT: Input should be a valid integer" in line
