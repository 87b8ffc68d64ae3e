"""CONCH_CALLBACK_ALLOWED_HOSTS: which hosts async predictions may POST their results to.

Comma-separated entries, case-insensitive, whitespace around each ignored:

- `hooks.example.com`: that host exactly, any port;
- `hooks.example.com:8443`: that host on that port only;
- `*.example.com` (optionally `:port`): any name below example.com, at any depth,
  never example.com itself;
- `10.0.0.5`, `[::1]`, `[::1]:9000`: an IP address, exactly.

Empty (the default): callbacks are off. A host the list names exactly may resolve to
a private, loopback or link-local address (an operator's own receiver); one matched
only by a wildcard must resolve to public addresses alone (jobs/callbacks.py), so a
wildcard can never open the way to internal services. Names are compared in their
ASCII (IDNA) form, parsed as httpx parses the URL it will connect to.
Settings (core/settings.py) validates the text with `CallbackAllowList.parse` at start.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

import httpx

# DNS labels; `_` too, which DNS allows in names (if not in host names proper).
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")


def normalize_host(raw_host: str) -> str:
    """A URL's host as the allow-list compares it: lower case, no trailing dot, an IP
    address in its compressed form (so `::ffff:127.0.0.1` equals `::ffff:7f00:1`)."""
    host = raw_host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPattern:
    host: str  # normalized; for a wildcard, the domain below which names match
    wildcard: bool
    port: int | None  # None: any port

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"*.{host}" if self.wildcard else host
        return text if self.port is None else f"{text}:{self.port}"


@dataclass(frozen=True)
class CallbackAllowList:
    patterns: tuple[HostPattern, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CallbackAllowList:
        """The list `text` writes; ValueError naming the first entry that is not one."""
        return _parse(text)

    def match(self, host: str, port: int) -> HostPattern | None:
        """The pattern admitting a normalized host on a port, an exact one before a
        wildcard (only an exact one unlocks non-public addresses); None: refused."""
        found = [p for p in self.patterns if p.matches(host, port)]
        found.sort(key=lambda p: p.wildcard)
        return found[0] if found else None

    def __bool__(self) -> bool:
        return bool(self.patterns)


@lru_cache(maxsize=16)  # the same setting's text, parsed at every submission
def _parse(text: str) -> CallbackAllowList:
    entries = [entry.strip() for entry in text.split(",")]
    return CallbackAllowList(tuple(_pattern(entry) for entry in entries if entry))


def _pattern(entry: str) -> HostPattern:
    wildcard = entry.startswith("*.")
    rest = entry[2:] if wildcard else entry
    refusal = (
        f"callback host {entry!r} is not a host, host:port, *.domain or IP address "
        "(e.g. hooks.example.com, hooks.example.com:8443, *.example.com, 10.0.0.5, [::1])"
    )
    try:
        # A scheme without a default port, so that an explicit `:80` is kept.
        url = httpx.URL(f"entry://{rest}")
    except httpx.InvalidURL:
        raise ValueError(refusal) from None
    # Anything beyond host[:port] (a path, a query, user@) is a URL, not a host.
    if url.userinfo or url.path != "/" or url.query or url.fragment or "/" in rest:
        raise ValueError(refusal)
    host = normalize_host(url.raw_host.decode("ascii"))
    if not host or (wildcard and is_ip_address(host)):
        raise ValueError(refusal)
    if not is_ip_address(host) and not _NAME.fullmatch(host):
        raise ValueError(refusal)
    if url.port is not None and not 1 <= url.port <= 65535:
        raise ValueError(f"callback host {entry!r}: the port must be between 1 and 65535")
    return HostPattern(host, wildcard, url.port)
