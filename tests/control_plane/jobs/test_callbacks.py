"""Callback delivery against a real local receiver: signed, retried, recorded, bounded."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from conch_embedded.process import free_port
from control_plane.core.callback_hosts import CallbackAllowList
from control_plane.jobs.callback_urls import check_callback_url
from control_plane.jobs.callbacks import ATTEMPT_HEADER, Delivery, deliver
from control_plane.keys.webhooks import SIGNATURE_HEADER, verify_signature, webhook_secret
from tests.control_plane.jobs.callback_helpers import Dns, FakeTime, Receiver

SECRET = webhook_secret(b"server secret of the test", 7)
BODY = orjson.dumps({"task_id": "t-1", "status": "completed", "result": {"predictions": [1]}})
LOCAL = CallbackAllowList.parse("127.0.0.1")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    return Dns(monkeypatch)


async def test_a_receiver_failing_three_times_gets_the_result_once_with_every_attempt_recorded(
    client: httpx.AsyncClient,
) -> None:
    fake = FakeTime()
    snapshots: list[Delivery] = []

    async def progress(snapshot: Delivery) -> None:
        snapshots.append(snapshot)

    async with Receiver([500, 500, 500, 200]) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/hooks/conch?x=1"
        delivery = await deliver(
            client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=300,
            sleep=fake.sleep, clock=fake.clock, on_attempt=progress,
        )  # fmt: skip
    assert delivery.status == "delivered"
    assert [a.status_code for a in delivery.attempts] == [500, 500, 500, 200]
    assert [a.number for a in delivery.attempts] == [1, 2, 3, 4]
    assert delivery.delivered_at == delivery.attempts[-1].at
    assert len(receiver.received) == 4  # delivered once: nothing after the 200
    for number, request in enumerate(receiver.received, start=1):
        assert request.request_line == "POST /hooks/conch?x=1 HTTP/1.1"
        assert request.body == BODY
        assert request.headers["content-type"] == "application/json"
        assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
        assert request.headers[ATTEMPT_HEADER.lower()] == str(number)
        signature = request.headers[SIGNATURE_HEADER.lower()]
        assert verify_signature(SECRET, signature, request.body, now=fake.now)
        assert not verify_signature(SECRET, signature, request.body + b" ", now=fake.now)
    # Backoff doubles from first_delay_s (0.5), each wait jittered into [base/2, base].
    assert len(fake.slept) == 3
    for base, slept in zip([0.5, 1, 2], fake.slept, strict=True):
        assert base / 2 <= slept <= base
    assert [len(s.attempts) for s in snapshots] == [1, 2, 3]
    assert {s.status for s in snapshots} == {"retrying"}
    # Stored on the task as JSON: round-trips, and holds nothing the receiver said.
    stored = delivery.model_dump_json()
    assert Delivery.model_validate_json(stored) == delivery
    assert "receiver" not in stored and "Scripted" not in stored


async def test_a_permanent_refusal_is_not_retried(client: httpx.AsyncClient) -> None:
    fake = FakeTime()
    async with Receiver([404]) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/"
        delivery = await deliver(
            client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=300,
            sleep=fake.sleep, clock=fake.clock,
        )  # fmt: skip
    assert delivery.status == "failed" and delivery.delivered_at is None
    assert [(a.status_code, a.error) for a in delivery.attempts] == [(404, None)]
    assert fake.slept == [] and len(receiver.received) == 1


async def test_a_dead_port_fails_when_the_budget_runs_out(client: httpx.AsyncClient) -> None:
    fake = FakeTime()
    start = fake.now
    url = f"http://127.0.0.1:{free_port()}/"
    delivery = await deliver(
        client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=120, max_delay_s=10,
        sleep=fake.sleep, clock=fake.clock,
    )  # fmt: skip
    assert delivery.status == "failed"
    assert {(a.status_code, a.error) for a in delivery.attempts} == {(None, "connection failed")}
    assert len(delivery.attempts) == len(fake.slept) + 1 > 10
    assert max(fake.slept) <= 10
    # No attempt after the budget, and it stopped only when the next wait did not fit.
    assert fake.now - start <= 120 < fake.now - start + 10


async def test_busy_answers_are_retried_after_their_retry_after(client: httpx.AsyncClient) -> None:
    fake = FakeTime()
    async with Receiver([429, 408, 503, 204], headers={"Retry-After": "7"}) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/"
        delivery = await deliver(
            client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=60,
            sleep=fake.sleep, clock=fake.clock,
        )  # fmt: skip
    assert delivery.status == "delivered"
    assert [a.status_code for a in delivery.attempts] == [429, 408, 503, 204]
    assert fake.slept == [7, 7, 7]


async def test_a_retry_after_beyond_the_budget_ends_the_delivery(
    client: httpx.AsyncClient,
) -> None:
    fake = FakeTime()
    async with Receiver([503], headers={"Retry-After": "3600"}) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/"
        delivery = await deliver(
            client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=300,
            sleep=fake.sleep, clock=fake.clock,
        )  # fmt: skip
    assert delivery.status == "failed" and len(delivery.attempts) == 1
    assert fake.slept == []


async def test_a_redirect_is_never_followed(client: httpx.AsyncClient) -> None:
    async with Receiver([200]) as elsewhere:
        location = f"http://127.0.0.1:{elsewhere.port}/"
        async with Receiver([307], headers={"Location": location}) as receiver:
            url = f"http://127.0.0.1:{receiver.port}/"
            delivery = await deliver(client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=60)
    assert delivery.status == "failed"
    assert [(a.status_code, a.error) for a in delivery.attempts] == [(307, "redirect not followed")]
    assert elsewhere.received == []


async def test_an_attempt_that_is_never_answered_times_out(client: httpx.AsyncClient) -> None:
    async with Receiver([200], hang=True) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/"
        delivery = await deliver(
            client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=0, timeout_s=0.2
        )
    assert [(a.status_code, a.error) for a in delivery.attempts] == [(None, "timed out")]
    assert len(receiver.received) == 1


async def test_the_connection_goes_to_the_addresses_checked_not_to_a_new_lookup(
    client: httpx.AsyncClient, dns: Dns
) -> None:
    """DNS rebinding: a wildcard host that resolved publicly at submission and points at
    loopback by the time of delivery is refused, and nothing reaches loopback."""
    allowed = CallbackAllowList.parse("*.hooks.test")
    async with Receiver([200]) as receiver:
        url = f"http://partner.hooks.test:{receiver.port}/"
        dns.answers["partner.hooks.test"] = ["8.8.8.8"]
        await check_callback_url(url, allowed)  # accepted at submission
        dns.answers["partner.hooks.test"] = ["127.0.0.1"]
        delivery = await deliver(client, url, BODY, SECRET, allowed=allowed, retry_for_s=60)
    assert delivery.status == "failed" and len(delivery.attempts) == 1
    assert (delivery.attempts[0].error or "").startswith("refused: callback host 'partner.hooks")
    assert "127.0.0.1" not in (delivery.attempts[0].error or "")
    assert receiver.received == []


async def test_a_name_is_delivered_to_its_checked_address_with_its_own_host_header(
    client: httpx.AsyncClient, dns: Dns
) -> None:
    """The first address refuses the connection: the next one takes it, same attempt."""
    async with Receiver([200]) as receiver:
        dns.answers["receiver.test"] = ["127.0.0.2", "127.0.0.1"]
        url = f"http://receiver.test:{receiver.port}/in"
        delivery = await deliver(
            client, url, BODY, SECRET, allowed=CallbackAllowList.parse("receiver.test"),
            retry_for_s=0,
        )  # fmt: skip
    assert delivery.status == "delivered" and len(delivery.attempts) == 1
    assert [r.headers["host"] for r in receiver.received] == [f"receiver.test:{receiver.port}"]


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
@pytest.mark.parametrize(
    ("certified", "delivered"), [("receiver.test", True), ("other.test", False)]
)
async def test_https_to_a_checked_address_still_verifies_the_hosts_certificate(
    dns: Dns, tmp_path: Path, certified: str, delivered: bool
) -> None:
    cert, key = _certificate(tmp_path, certified)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    dns.answers["receiver.test"] = ["127.0.0.1"]
    allowed = CallbackAllowList.parse("receiver.test")
    async with (
        Receiver([200], tls=server_tls) as receiver,
        httpx.AsyncClient(verify=trusting, trust_env=False) as client,
    ):
        url = f"https://receiver.test:{receiver.port}/"
        delivery = await deliver(client, url, BODY, SECRET, allowed=allowed, retry_for_s=0)
    if delivered:
        assert delivery.status == "delivered"
        assert receiver.received[0].body == BODY
    else:
        assert [a.error for a in delivery.attempts] == ["TLS handshake failed"]
        assert receiver.received == []


async def test_the_delivery_is_plain_json(client: httpx.AsyncClient) -> None:
    async with Receiver([200]) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/"
        delivery = await deliver(client, url, BODY, SECRET, allowed=LOCAL, retry_for_s=0)
    stored = json.loads(json.dumps(delivery.model_dump(mode="json")))
    assert stored["status"] == "delivered" and stored["attempts"][0]["status_code"] == 200
    assert set(stored["attempts"][0]) == {"number", "at", "status_code", "error", "duration_ms"}
    assert stored["attempts"][0]["at"].endswith("Z")
