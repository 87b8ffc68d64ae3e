"""Where a callback may go: checked at submission (422) and again before every attempt.

A callback_url must be http or https, carry no credentials, name a host that
CONCH_CALLBACK_ALLOWED_HOSTS admits (syntax: core/callback_hosts.py), and resolve.
Every address it resolves to must be public (not private, loopback, link-local,
multicast, reserved or unspecified; IPv4 inside IPv6 judged as the IPv4 address)
unless the allow-list names the host exactly: a wildcard never reaches an internal
service, the cloud metadata address (169.254.169.254) included. Delivery connects to
the addresses this check just judged (`CallbackTarget.pinned`), so a name re-pointed
between check and connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from control_plane.core.callback_hosts import CallbackAllowList, is_ip_address, normalize_host
from control_plane.core.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RefusalReason = Literal[
    "invalid_url", "scheme", "credentials", "not_allowed", "non_public_address", "unresolvable"
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: an IPv4 address in its last 32 bits
_SHOWN_HOST_CHARS = 255


class CallbackRefusedError(ValidationError):
    """422: the callback_url may not be called. The message says why in terms of the
    URL and the setting, never an address it resolved to."""

    def __init__(self, message: str, reason: RefusalReason) -> None:
        super().__init__(message, field="callback_url", reason=reason)
        self.reason = reason


@dataclass(frozen=True)
class CallbackTarget:
    url: httpx.URL
    host: str  # normalized (core/callback_hosts.py)
    addresses: tuple[IPAddress, ...]  # as resolved, in the resolver's order

    def pinned(self, address: IPAddress) -> tuple[httpx.URL, dict[str, Any]]:
        """The URL naming `address` instead of the host, and the request extensions that
        keep TLS verifying the host's certificate (SNI) though the URL names an IP."""
        if is_ip_address(self.host):
            return self.url, {}
        url = self.url.copy_with(host=address.compressed)
        return url, ({"sni_hostname": self.host} if self.url.scheme == "https" else {})

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")


async def check_callback_url(
    url: str, allowed: CallbackAllowList, *, resolve_timeout_s: float = 5.0
) -> None:
    """422 (`CallbackRefusedError`) unless results may be POSTed to `url`."""
    await resolve_callback(url, allowed, resolve_timeout_s=resolve_timeout_s)


async def resolve_callback(
    url: str, allowed: CallbackAllowList, *, resolve_timeout_s: float = 5.0
) -> CallbackTarget:
    """The checked URL and the addresses it may be delivered to; 422 otherwise."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise CallbackRefusedError("callback_url is not a valid URL", "invalid_url") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise CallbackRefusedError("callback_url must be an http:// or https:// URL", "scheme")
    if parsed.userinfo:
        raise CallbackRefusedError(
            "callback_url must not carry credentials (user:password@)", "credentials"
        )
    host = normalize_host(parsed.raw_host.decode("ascii", "replace"))
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[parsed.scheme]
    if not host or not 1 <= port <= 65535:
        raise CallbackRefusedError("callback_url has no valid host and port", "invalid_url")
    shown = parsed.host[:_SHOWN_HOST_CHARS]
    if not allowed:
        raise CallbackRefusedError(
            "callbacks are off on this server (CONCH_CALLBACK_ALLOWED_HOSTS is empty)",
            "not_allowed",
        )
    pattern = allowed.match(host, port)
    if pattern is None:
        raise CallbackRefusedError(
            f"callback host {shown!r} (port {port}) is not in CONCH_CALLBACK_ALLOWED_HOSTS",
            "not_allowed",
        )
    addresses = await _resolve(host, port, resolve_timeout_s, shown)
    if pattern.wildcard and not all(is_public(address) for address in addresses):
        raise CallbackRefusedError(
            f"callback host {shown!r} resolves to a private, loopback, link-local or other "
            "non-public address; only a host CONCH_CALLBACK_ALLOWED_HOSTS names exactly may",
            "non_public_address",
        )
    return CallbackTarget(parsed, host, addresses)


async def _resolve(host: str, port: int, timeout_s: float, shown: str) -> tuple[IPAddress, ...]:
    if is_ip_address(host):
        return (ipaddress.ip_address(host),)
    unresolvable = CallbackRefusedError(f"callback host {shown!r} does not resolve", "unresolvable")
    try:
        # The loop's resolver runs in a thread: the event loop never blocks on DNS.
        async with asyncio.timeout(timeout_s):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError, UnicodeError):
        raise unresolvable from None
    found: dict[IPAddress, None] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            # A link-local IPv6 address comes with its zone (fe80::1%eth0).
            found[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    if not found:
        raise unresolvable
    return tuple(found)


def is_public(address: IPAddress) -> bool:
    """Whether `address` is on the public internet; an IPv4 address carried in IPv6
    (mapped, NAT64, 6to4) is judged as that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in _NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
        if address.sixtofour is not None and not is_public(address.sixtofour):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast  # is_global says yes to 224.0.0.0/4 on Python 3.11
        or address.is_reserved
        or address.is_unspecified
    )
