"""A load with a config override changes what Triton serves; the file's config restores it.

This is how batching is retuned without touching the repository: read the
config Triton serves, change it, load with it. The file's config.pbtxt stays
as it was; loading it as an override (model_config.config_override) goes back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.core.errors import ModelLoadError, TritonError
from control_plane.triton.client import TritonGateway
from control_plane.triton.model_config import config_override
from tests.control_plane.triton.gateways import gateway_over
from tests.control_plane.triton.python_models import (
    TEXT_INPUT,
    TEXT_MAX_BATCH,
    UPPER_OUTPUT,
    write_text_model,
)

MODEL = "cptest_gw_override"
FILE_QUEUE_DELAY_US = 100  # python_models.py's text model
OVERRIDE_MAX_BATCH, OVERRIDE_QUEUE_DELAY_US = 2, 5000


@pytest.fixture
async def gateway(model_repository: Path, triton: EmbeddedTriton) -> AsyncIterator[TritonGateway]:
    write_text_model(model_repository, MODEL)
    gateway = gateway_over("grpc", triton)
    await gateway.load(MODEL)
    yield gateway
    await gateway.unload(MODEL)
    await gateway.close()


def batching(config: dict[str, object]) -> tuple[int, int]:
    """(max_batch_size, max_queue_delay_microseconds); protobuf's JSON writes int64 as text."""
    dynamic = config["dynamic_batching"]
    assert isinstance(dynamic, dict)
    return int(str(config["max_batch_size"])), int(dynamic["max_queue_delay_microseconds"])


async def answers(gateway: TritonGateway, rows: int) -> int:
    words = np.asarray([[f"w{i}"] for i in range(rows)], dtype=np.object_)
    answer = await gateway.infer(MODEL, {TEXT_INPUT: words}, [UPPER_OUTPUT])
    return len(answer[UPPER_OUTPUT])


async def test_a_config_override_is_served_until_a_plain_load(
    gateway: TritonGateway, model_repository: Path
) -> None:
    config = await gateway.model_config(MODEL)
    assert config["name"] == MODEL
    assert batching(config) == (TEXT_MAX_BATCH, FILE_QUEUE_DELAY_US)
    file_text = (model_repository / MODEL / "config.pbtxt").read_text()

    config["max_batch_size"] = OVERRIDE_MAX_BATCH
    config["dynamic_batching"]["max_queue_delay_microseconds"] = OVERRIDE_QUEUE_DELAY_US
    # Triton filled in a preferred batch of the old max, which the new one must not be below.
    config["dynamic_batching"]["preferred_batch_size"] = [OVERRIDE_MAX_BATCH]
    await gateway.load(MODEL, config=json.dumps(config))
    assert batching(await gateway.model_config(MODEL)) == (
        OVERRIDE_MAX_BATCH,
        OVERRIDE_QUEUE_DELAY_US,
    )
    # Triton enforces what it now serves: a batch the file allows is refused.
    assert await answers(gateway, OVERRIDE_MAX_BATCH) == OVERRIDE_MAX_BATCH
    with pytest.raises(TritonError, match="batch"):
        await answers(gateway, TEXT_MAX_BATCH)
    assert (model_repository / MODEL / "config.pbtxt").read_text() == file_text

    # Triton 2.51 keeps an override over a plain load of unchanged files (the trap
    # `load`'s docstring names): if this changes, that docstring must too.
    await gateway.load(MODEL)
    assert batching(await gateway.model_config(MODEL)) == (
        OVERRIDE_MAX_BATCH,
        OVERRIDE_QUEUE_DELAY_US,
    )

    await gateway.load(MODEL, config=config_override(file_text))
    assert batching(await gateway.model_config(MODEL)) == (TEXT_MAX_BATCH, FILE_QUEUE_DELAY_US)
    assert await answers(gateway, TEXT_MAX_BATCH) == TEXT_MAX_BATCH


def test_a_file_that_is_not_a_model_config_is_refused_before_triton() -> None:
    with pytest.raises(ValueError, match="not a Triton model config"):
        config_override('name: "x"\nno_such_field: 3\n')


async def test_an_override_triton_refuses_is_a_load_error_and_the_model_keeps_serving(
    gateway: TritonGateway,
) -> None:
    config = await gateway.model_config(MODEL)
    config["input"][0]["data_type"] = "TYPE_NOT_A_TYPE"
    with pytest.raises(ModelLoadError) as refused:
        await gateway.load(MODEL, config=json.dumps(config))
    assert MODEL in refused.value.message
    assert await answers(gateway, 1) == 1


async def test_metadata_names_the_tensors_with_integer_shapes(gateway: TritonGateway) -> None:
    metadata = await gateway.model_metadata(MODEL)
    assert metadata["name"] == MODEL
    assert metadata["inputs"] == [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1, 1]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        UPPER_OUTPUT: "BYTES",
        "LENGTH": "INT64",
    }


async def test_config_and_metadata_of_an_unknown_model_are_tritons_refusal(
    gateway: TritonGateway,
) -> None:
    for ask in (gateway.model_config, gateway.model_metadata):
        with pytest.raises(TritonError) as refused:
            await ask("cptest_gw_no_such_model")
        assert refused.value.status_code == 502
        assert "cptest_gw_no_such_model" in refused.value.message
