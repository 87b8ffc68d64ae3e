"""The core's input validation: every form of `data`, and every refusal naming its feature."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from conch_manifest.schema import TensorSpec
from control_plane.core.errors import BadRequestError
from control_plane.model_core.handle import ModelHandle
from control_plane.model_core.inputs import input_tensors

FEATURES = ["mean radius", "mean texture", "mean area"]


def handle(*inputs: TensorSpec, max_batch_size: int = 64) -> ModelHandle:
    return ModelHandle(
        model_id=7,
        name="m",
        triton_name="m_1",
        framework="onnx",
        task="classification",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        inputs=inputs,
        outputs=(TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2]),),
        class_labels=[0, 1],
        max_batch_size=max_batch_size,
        recommender=None,
    )


TABULAR = handle(TensorSpec(name="input", datatype="FP32", shape=[-1, 3], feature_names=FEATURES))
TEXT = handle(TensorSpec(name="input", datatype="BYTES", shape=[-1, 1]))
TWO_INPUTS = handle(
    TensorSpec(name="dense", datatype="FP32", shape=[-1, 2], feature_names=["a", "b"]),
    TensorSpec(name="ids", datatype="INT64", shape=[-1, 1]),
)


def refusal(model: ModelHandle, data: Any, **kwargs: Any) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        input_tensors(model, data, **kwargs)
    return caught.value


def test_rows_and_records_give_the_same_tensor() -> None:
    rows, n = input_tensors(TABULAR, [[1, 2.5, 3], [4, 5, 6]])
    records, _ = input_tensors(
        TABULAR,
        [
            {"mean radius": 1, "mean texture": 2.5, "mean area": 3},
            dict(zip(FEATURES, [4, 5, 6], strict=True)),
        ],
    )
    assert n == 2
    assert rows["input"].dtype == np.float32
    np.testing.assert_array_equal(rows["input"], np.array([[1, 2.5, 3], [4, 5, 6]]))
    np.testing.assert_array_equal(records["input"], rows["input"])


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ([{"mean radius": 1, "mean texture": 2}], "missing feature 'mean area'"),
        (
            [{"mean radius": 1, "mean texture": 2, "mean area": 3, "colour": 4}],
            "unknown feature 'colour'",
        ),
        ([[1, 2, "3"]], "feature 'mean area': expected a number, got a string"),
        ([[1, True, 3]], "feature 'mean texture': expected a number, got a boolean"),
        ([[1, None, 3]], "feature 'mean texture': expected a number, got null"),
        ([[1, 2, 3], [1, math.nan, 3]], "row 1, feature 'mean texture': features must be finite"),
        ([[1, 2, 1e300]], "row 0, feature 'mean area': features must be finite"),  # inf in FP32
        (
            [[1, 2, 3], [1, 2]],
            "row 1 has 2 values; input 'input' takes 3: mean radius, mean texture, mean area",
        ),
        ([1, 2, 3], "row 0 of input 'input' is a number"),
        ([], "no rows"),
        ("text", "data must be a list"),
        ([{"mean radius": 1, "mean texture": 2, "mean area": 3}, [1, 2, 3]], "row 1 is a list"),
    ],
)
def test_bad_tabular_data_is_refused_naming_the_feature(data: Any, named: str) -> None:
    assert named in refusal(TABULAR, data).message


def test_too_many_rows() -> None:
    error = refusal(TABULAR, [[1, 2, 3]] * 11, max_rows=10)
    assert "too many rows: 11; at most 10" in error.message
    assert error.details["max_rows"] == 10


@pytest.mark.parametrize(
    "data", [["good", "bad"], [["good"], ["bad"]], [{"input": "good"}, {"input": "bad"}]]
)
def test_text_in_each_form(data: Any) -> None:
    tensors, n = input_tensors(TEXT, data)
    assert n == 2
    assert tensors["input"].dtype == object
    assert tensors["input"].shape == (2, 1)
    assert tensors["input"].tolist() == [["good"], ["bad"]]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ([1.5], "row 0 of input 'input' is a number"),
        ([["a", "b"]], "row 0 has 2 values; input 'input' takes 1"),
        ([[3]], "feature 'input[0]': expected a string, got a number"),
        ([{"text": "x"}], "missing feature 'input'"),
    ],
)
def test_bad_text_is_refused(data: Any, named: str) -> None:
    assert named in refusal(TEXT, data).message


def test_several_inputs_by_name_and_by_record() -> None:
    by_input, n = input_tensors(TWO_INPUTS, {"dense": [[1, 2], [3, 4]], "ids": [5, 6]})
    records, _ = input_tensors(TWO_INPUTS, [{"a": 1, "b": 2, "ids": 5}, {"a": 3, "b": 4, "ids": 6}])
    assert n == 2
    assert by_input["ids"].dtype == np.int64
    for tensors in (by_input, records):
        np.testing.assert_array_equal(tensors["dense"], [[1, 2], [3, 4]])
        np.testing.assert_array_equal(tensors["ids"], [[5], [6]])


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"dense": [[1, 2]]}, "missing input 'ids'"),
        ({"dense": [[1, 2]], "ids": [1], "extra": [1]}, "unknown input 'extra'"),
        ({"dense": [[1, 2]], "ids": [1, 2]}, "same number of rows"),
        ({"dense": [[1, 2]], "ids": [1.5]}, "INT64 takes whole numbers"),
        ([[1, 2]], "has 2 inputs (dense, ids)"),
    ],
)
def test_bad_multi_input_data_names_the_input(data: Any, named: str) -> None:
    assert named in refusal(TWO_INPUTS, data).message
