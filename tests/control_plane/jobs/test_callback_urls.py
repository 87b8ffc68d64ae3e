"""Which callback URLs are refused at submission (422), and the allow-list's syntax."""

from __future__ import annotations

import ipaddress

import orjson
import pydantic
import pytest

from control_plane.core.callback_hosts import CallbackAllowList
from control_plane.core.errors import conch_error_response
from control_plane.core.settings import Settings, settings_error_line
from control_plane.jobs.callback_urls import CallbackRefusedError, check_callback_url, is_public
from tests.control_plane.jobs.callback_helpers import Dns

NON_PUBLIC = ["127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "fe80::1"]


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    return Dns(monkeypatch)


async def _refusal(url: str, allowed: str) -> CallbackRefusedError:
    with pytest.raises(CallbackRefusedError) as refused:
        await check_callback_url(url, CallbackAllowList.parse(allowed))
    return refused.value


@pytest.mark.parametrize(
    ("url", "allowed", "reason"),
    [
        ("ftp://hooks.example.com/x", "hooks.example.com", "scheme"),
        ("file:///etc/passwd", "hooks.example.com", "scheme"),
        ("https://user:pw@hooks.example.com/", "hooks.example.com", "credentials"),
        ("https://user@hooks.example.com/", "hooks.example.com", "credentials"),
        ("http:///nohost", "hooks.example.com", "invalid_url"),
        ("http://[::1/", "hooks.example.com", "invalid_url"),
        ("https://hooks.example.com/", "", "not_allowed"),  # callbacks off
        ("https://other.example.com/", "hooks.example.com", "not_allowed"),
        ("https://example.com/", "*.example.com", "not_allowed"),  # not the domain itself
        ("https://hooks.example.com.evil.test/", "hooks.example.com", "not_allowed"),
        ("https://hooks.example.com:8443/", "hooks.example.com:443", "not_allowed"),
        # The userinfo trick: httpx (the client that connects) reads evil.test as the host.
        ("http://hooks.example.com\\@evil.test/", "hooks.example.com", "credentials"),
        ("http://evil.test#@hooks.example.com/", "hooks.example.com", "not_allowed"),
    ],
)
async def test_malformed_and_unlisted_urls_are_refused(url: str, allowed: str, reason: str) -> None:
    assert (await _refusal(url, allowed)).reason == reason


@pytest.mark.parametrize("address", NON_PUBLIC)
async def test_a_literal_non_public_address_passes_only_when_named_exactly(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    refused = await _refusal(f"http://{host}:9000/", "*.example.com, 10.9.9.9")
    assert refused.reason == "not_allowed"
    await check_callback_url(f"http://{host}:9000/", CallbackAllowList.parse(f"x.test,{host}"))


@pytest.mark.parametrize("address", NON_PUBLIC)
async def test_a_wildcard_never_reaches_a_non_public_address(dns: Dns, address: str) -> None:
    dns.answers["a.example.com"] = ["8.8.8.8", address]  # one bad address is enough
    refused = await _refusal("https://a.example.com/hook", "*.example.com")
    assert refused.reason == "non_public_address"
    assert address not in refused.message and "8.8.8.8" not in refused.message
    # Named exactly, the operator vouches for the host: its internal address is allowed.
    await check_callback_url("https://a.example.com/hook", CallbackAllowList.parse("a.example.com"))


async def test_a_wildcard_admits_public_names_below_its_domain(dns: Dns) -> None:
    dns.answers["a.b.example.com"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    allowed = CallbackAllowList.parse("*.example.com")
    await check_callback_url("https://A.B.Example.COM./hook", allowed)  # case, trailing dot
    assert dns.asked == ["a.b.example.com"]


async def test_localhost_resolves_for_real_and_passes_only_when_named_exactly() -> None:
    assert (await _refusal("http://localhost:8080/", "*.localhost")).reason == "not_allowed"
    await check_callback_url("http://localhost:8080/", CallbackAllowList.parse("localhost"))


async def test_a_host_that_does_not_resolve_is_refused(dns: Dns) -> None:
    dns.answers["gone.example.com"] = []
    refused = await _refusal("https://gone.example.com/", "gone.example.com")
    assert refused.reason == "unresolvable"


async def test_a_refusal_is_a_422_with_the_error_body() -> None:
    refused = await _refusal("ftp://hooks.example.com/", "hooks.example.com")
    response = conch_error_response(refused)
    body = orjson.loads(response.body)
    assert response.status_code == 422
    assert body["error"] == "CallbackRefusedError"
    assert body["details"] == {"field": "callback_url", "reason": "scheme"}
    assert {"message", "timestamp", "request_id"} <= body.keys()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),  # an IPv4-mapped address is the IPv4 address
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:a00:1::1", False),  # 6to4 around 10.0.0.1
        ("100.64.0.1", False),  # carrier-grade NAT
        ("224.0.0.1", False),
        ("ff02::1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("240.0.0.1", False),
        ("192.168.1.1", False),
        ("fc00::1", False),
    ],
)
def test_which_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_the_allow_list_syntax() -> None:
    allowed = CallbackAllowList.parse(" Hooks.Example.com ,*.example.org:8443,, 10.0.0.5,[::1]:80")
    assert [str(p) for p in allowed.patterns] == [
        "hooks.example.com", "*.example.org:8443", "10.0.0.5", "[::1]:80",
    ]  # fmt: skip
    assert allowed.match("hooks.example.com", 1234) is not None
    assert allowed.match("deep.a.example.org", 8443) is not None
    assert allowed.match("a.example.org", 443) is None
    assert allowed.match("::1", 80) is not None and allowed.match("::1", 81) is None
    assert not CallbackAllowList.parse("") and not CallbackAllowList.parse(" , ")


@pytest.mark.parametrize(
    "entry",
    ["*", "*.", "*.10.0.0.1", "a.com/x", "http://a.com", "u@a.com", "a.com?x", "::1",
     "a b.com", "-a.com", "a..b", "a.com:0", "a.com:70000", "a.com:http"],
)  # fmt: skip
def test_a_malformed_entry_is_refused_at_start(entry: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(callback_allowed_hosts=f"hooks.example.com,{entry}")
    line = settings_error_line(refused.value)
    assert line.startswith("invalid settings: CONCH_CALLBACK_ALLOWED_HOSTS: callback host"), line
    assert repr(entry) in line


def test_the_settings_give_the_parsed_list() -> None:
    settings = Settings(callback_allowed_hosts="*.example.com:443")
    assert settings.callback_allow_list.match("a.example.com", 443) is not None
    assert not Settings().callback_allow_list  # the default: no callbacks
