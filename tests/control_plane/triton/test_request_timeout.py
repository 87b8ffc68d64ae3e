"""A request's own deadline (`timeout_s`) beats the gateway's, over both protocols.

The slow model (slow_model.py) really sleeps inside Triton, so the deadline is
missed in Triton, not faked. The gateway's default deadline is long: a request
that keeps it is answered although it takes longer than the short one allowed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.core.errors import TritonTimeoutError
from control_plane.triton.client import TritonGateway
from tests.control_plane.triton.gateways import PROTOCOLS, gateway_over, loaded
from tests.control_plane.triton.slow_model import INPUT, OUTPUT, write_slow_model

SLOW = "cptest_gw_slow"
SHORT_DEADLINE_S = 0.5
LATE_S = 3.0  # far past the short deadline
SLOWER_THAN_SHORT_S = 1.0  # past the short deadline, well within the gateway's
GATEWAY_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
async def slow_model(model_repository: Path, triton: EmbeddedTriton) -> AsyncIterator[None]:
    write_slow_model(model_repository, SLOW)
    async with loaded(triton, SLOW):
        yield


@pytest.fixture(params=PROTOCOLS)
async def gateway(
    request: pytest.FixtureRequest, triton: EmbeddedTriton, slow_model: None
) -> AsyncIterator[TritonGateway]:
    gateway = gateway_over(request.param, triton, timeout_s=GATEWAY_TIMEOUT_S, coalesce_in_flight=1)
    yield gateway
    await gateway.close()


def sleeping(seconds: float) -> npt.NDArray[np.float32]:
    return np.asarray([[seconds, 1.0]], dtype=np.float32)  # the model answers the row's sum


async def test_a_request_past_its_own_deadline_is_504_and_the_next_keeps_the_default(
    gateway: TritonGateway,
) -> None:
    with pytest.raises(TritonTimeoutError) as late:
        await gateway.infer(SLOW, {INPUT: sleeping(LATE_S)}, [OUTPUT], timeout_s=SHORT_DEADLINE_S)
    assert late.value.status_code == 504
    assert "DEADLINE_EXCEEDED" in late.value.details["triton_status"]

    answer = await gateway.infer(SLOW, {INPUT: sleeping(SLOWER_THAN_SHORT_S)}, [OUTPUT])
    assert answer[OUTPUT].tolist() == [[SLOWER_THAN_SHORT_S + 1.0]]


async def test_rows_carry_their_deadline_through_the_coalescer(gateway: TritonGateway) -> None:
    with pytest.raises(TritonTimeoutError):
        await gateway.infer_rows(
            SLOW, INPUT, sleeping(LATE_S), [OUTPUT], 8, timeout_s=SHORT_DEADLINE_S
        )
    answer = await gateway.infer_rows(
        SLOW, INPUT, sleeping(SLOWER_THAN_SHORT_S), [OUTPUT], 8, timeout_s=GATEWAY_TIMEOUT_S
    )
    assert answer[OUTPUT].tolist() == [[SLOWER_THAN_SHORT_S + 1.0]]
