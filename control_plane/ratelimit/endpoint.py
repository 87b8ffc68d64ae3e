"""Where the limiter's own connection goes: the server a redis-py client reaches.

The pipelined connection (resp.py) opens its own socket, so it must reach Redis
as redis-py does for the same REDIS_URL: plain TCP, TLS (`rediss://` with
redis-py's `ssl_*` query parameters) or a unix socket (`unix://`), then AUTH
(user/password or a credential provider), CLIENT SETNAME and SELECT. Options
are read through redis-py's own connection classes, so both understand a URL
alike (TLS contexts are built by redis-py's own code). What the pipelined
connection cannot honour refuses to start, with one line saying what to set,
instead of leaving every replica on its per-process limit without a word.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.credentials import CredentialProvider, UsernamePasswordCredentialProvider
from redis.exceptions import RedisError


class UnsupportedRedisURL(ValueError):
    """REDIS_URL asks for something the rate limiter's connection cannot do."""


# Exactly these: subclasses (Sentinel-managed connections, custom ones) find
# their server in ways a fixed address cannot follow.
_SCHEMES = {
    Connection: "redis://",
    SSLConnection: "rediss://",
    UnixDomainSocketConnection: "unix://",
}


def encode_command(*args: str | int | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(frozen=True)
class RedisEndpoint:
    host: str | None  # TCP, with or without TLS
    port: int
    path: str | None  # unix socket
    tls: ssl.SSLContext | None
    db: int
    client_name: str | None
    credentials: CredentialProvider | None

    @classmethod
    def from_url(cls, url: str) -> RedisEndpoint:
        try:
            options: dict[str, Any] = dict(parse_url(url))
        except ValueError as exc:
            raise UnsupportedRedisURL(f"REDIS_URL is invalid: {exc}") from None
        connection_class: type[AbstractConnection] = options.pop("connection_class", Connection)
        return cls.from_options(connection_class, options)

    @classmethod
    def like(cls, client: Redis) -> RedisEndpoint:
        pool = client.connection_pool
        return cls.from_options(pool.connection_class, pool.connection_kwargs)

    @classmethod
    def from_options(
        cls, connection_class: type[AbstractConnection], options: Mapping[str, Any]
    ) -> RedisEndpoint:
        if connection_class not in _SCHEMES:
            raise UnsupportedRedisURL(
                f"the rate limiter cannot follow a {connection_class.__name__} Redis client: "
                "set REDIS_URL to a redis://, rediss:// or unix:// URL"
            )
        try:
            # redis-py's own reading of the options: unknown ones and bad values fail here.
            probe = connection_class(**options)
        except TypeError as exc:  # "... got an unexpected keyword argument 'name'"
            option = str(exc).rpartition(" ")[2]
            raise UnsupportedRedisURL(
                f"REDIS_URL option {option} is not one redis-py accepts for "
                f"{_SCHEMES[connection_class]} URLs: remove it (ssl_* options need rediss://)"
            ) from None
        except (RedisError, ValueError) as exc:
            raise UnsupportedRedisURL(f"REDIS_URL has an invalid option: {exc}") from None
        tls = None
        if isinstance(probe, SSLConnection):
            try:  # now, not at the first request: a missing CA file is a startup error
                tls = probe.ssl_context.get()
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise UnsupportedRedisURL(
                    "REDIS_URL's TLS files cannot be used (check ssl_ca_certs, ssl_certfile, "
                    f"ssl_keyfile, ssl_password): {exc}"
                ) from None
        credentials = probe.credential_provider
        if credentials is None and (probe.username or probe.password):
            credentials = UsernamePasswordCredentialProvider(probe.username, probe.password)
        if isinstance(probe, UnixDomainSocketConnection):
            host, port, path = None, 0, probe.path
        else:
            assert isinstance(probe, Connection)  # SSLConnection is one too
            host, port, path = probe.host, int(probe.port), None
        return cls(
            host=host,
            port=port,
            path=path,
            tls=tls,
            db=int(probe.db or 0),
            client_name=probe.client_name,
            credentials=credentials,
        )

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.path is not None:
            return await asyncio.open_unix_connection(self.path)
        # With TLS the host name is checked against the certificate, as redis-py does.
        return await asyncio.open_connection(self.host, self.port, ssl=self.tls)

    async def setup_commands(self) -> list[bytes]:
        """AUTH, CLIENT SETNAME, SELECT: redis-py's order; each answers +OK."""
        commands = []
        if self.credentials is not None:
            commands.append(encode_command("AUTH", *await self.credentials.get_credentials_async()))
        if self.client_name:
            commands.append(encode_command("CLIENT", "SETNAME", self.client_name))
        if self.db:
            commands.append(encode_command("SELECT", self.db))
        return commands

    def describe(self) -> str:
        """For logs: where, never credentials."""
        if self.path is not None:
            return f"unix:{self.path}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"
