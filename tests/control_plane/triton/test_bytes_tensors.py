"""BYTES tensors (and FP64, BOOL, INT32) reach Triton and come back, over both protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.triton.client import TritonGateway
from control_plane.triton.tensors import datatype, serialize_bytes
from tests.control_plane.triton.gateways import PROTOCOLS, gateway_over, loaded
from tests.control_plane.triton.python_models import (
    LENGTH_OUTPUT,
    TEXT_INPUT,
    TEXT_MAX_BATCH,
    UPPER_OUTPUT,
    write_text_model,
    write_typed_model,
)

TEXT_MODEL, TYPED_MODEL = "cptest_gw_text", "cptest_gw_typed"


@pytest.fixture(scope="module")
async def models(model_repository: Path, triton: EmbeddedTriton) -> AsyncIterator[None]:
    write_text_model(model_repository, TEXT_MODEL)
    write_typed_model(model_repository, TYPED_MODEL)
    async with loaded(triton, TEXT_MODEL, TYPED_MODEL):
        yield


@pytest.fixture(params=PROTOCOLS)
async def gateway(
    request: pytest.FixtureRequest, triton: EmbeddedTriton, models: None
) -> AsyncIterator[TritonGateway]:
    gateway = gateway_over(request.param, triton, coalesce_in_flight=1)
    yield gateway
    await gateway.close()


def text_rows(*values: bytes | str) -> npt.NDArray[np.object_]:
    rows = np.empty((len(values), 1), dtype=np.object_)
    rows[:, 0] = values
    return rows


async def test_bytes_and_str_elements_go_out_as_bytes_and_come_back_as_bytes(
    gateway: TritonGateway,
) -> None:
    # An empty element, non-ASCII text, a NUL inside, bytes that are not UTF-8.
    rows = text_rows(b"", "caf\u00e9 ok", b"a\x00b", b"\xff\xfe", "x" * 1000)
    answer = await gateway.infer(TEXT_MODEL, {TEXT_INPUT: rows}, [UPPER_OUTPUT, LENGTH_OUTPUT])

    upper, lengths = answer[UPPER_OUTPUT], answer[LENGTH_OUTPUT]
    assert upper.dtype == np.object_ and upper.shape == (5, 1)
    # bytes.upper() in the model: ASCII letters only, the UTF-8 of "é" untouched.
    assert upper[:, 0].tolist() == [b"", b"CAF\xc3\xa9 OK", b"A\x00B", b"\xff\xfe", b"X" * 1000]
    assert lengths[:, 0].tolist() == [0, len("caf\u00e9 ok".encode()), 3, 2, 1000]


async def test_bytes_rows_are_split_and_merged_like_any_other_rows(
    gateway: TritonGateway,
) -> None:
    words = [f"word {i}" for i in range(TEXT_MAX_BATCH * 2 + 3)]  # three requests
    answer = await gateway.infer_rows(
        TEXT_MODEL, TEXT_INPUT, text_rows(*words), [UPPER_OUTPUT, LENGTH_OUTPUT], TEXT_MAX_BATCH
    )
    assert answer[UPPER_OUTPUT][:, 0].tolist() == [w.upper().encode() for w in words]
    assert answer[LENGTH_OUTPUT][:, 0].tolist() == [len(w) for w in words]


async def test_numpy_text_and_fixed_width_bytes_arrays_are_bytes_tensors(
    gateway: TritonGateway,
) -> None:
    for rows in (np.asarray([["abc"], ["de"]]), np.asarray([[b"abc"], [b"de"]])):
        answer = await gateway.infer_loaded(TEXT_MODEL, {TEXT_INPUT: rows}, [UPPER_OUTPUT])
        assert answer[UPPER_OUTPUT][:, 0].tolist() == [b"ABC", b"DE"]


async def test_fp64_bool_and_int32_tensors_keep_their_values(gateway: TritonGateway) -> None:
    x = np.asarray([[0.1, -2.5e300], [np.pi, 7.0]], dtype=np.float64)
    flag = np.asarray([[True], [False]])
    count = np.asarray([[-5], [2**31 - 2]], dtype=np.int32)
    answer = await gateway.infer(
        TYPED_MODEL, {"X": x, "FLAG": flag, "COUNT": count}, ["DOUBLED", "NEGATED", "NEXT"]
    )
    np.testing.assert_array_equal(answer["DOUBLED"], x * 2)
    assert answer["DOUBLED"].dtype == np.float64
    np.testing.assert_array_equal(answer["NEGATED"], ~flag)
    np.testing.assert_array_equal(answer["NEXT"], count + 1)
    assert answer["NEXT"].dtype == np.int32


async def test_an_element_that_is_neither_bytes_nor_str_is_refused_before_triton(
    gateway: TritonGateway,
) -> None:
    rows = text_rows(b"fine", "fine")
    rows[1, 0] = 42  # tritonclient would have sent b"42"
    with pytest.raises(TypeError, match="bytes or str, not int"):
        await gateway.infer(TEXT_MODEL, {TEXT_INPUT: rows}, [UPPER_OUTPUT])


def test_an_unsupported_dtype_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="unsupported input dtype complex128"):
        datatype(np.zeros(2, dtype=np.complex128))
    assert datatype(np.zeros(2, dtype=np.object_)) == "BYTES"


def test_bytes_wire_form_is_length_prefixed_row_major() -> None:
    rows = np.asarray([[b"ab", "c"], [b"", b"def"]], dtype=np.object_)
    expected = b"\x02\0\0\0ab" + b"\x01\0\0\0c" + b"\0\0\0\0" + b"\x03\0\0\0def"
    assert serialize_bytes(rows) == expected
    assert serialize_bytes(rows.T) == (  # a transposed view: its own row-major order
        b"\x02\0\0\0ab" + b"\0\0\0\0" + b"\x01\0\0\0c" + b"\x03\0\0\0def"
    )
