"""config.pbtxt generation, compared with golden files.

Regenerate the golden files after an intended change with
CONCH_UPDATE_GOLDEN=1 pytest tests/exporters/test_export_config.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVEL_COUNT
from exporters.config import ModelConfigSpec, TensorConfig, build_model_config, render_config

GOLDEN = Path(__file__).parent / "golden"

SPECS = {
    "classifier_cpu": ModelConfigSpec(
        name="iris-0123456789",
        backend="onnxruntime",
        inputs=(TensorConfig("input", "FP32", (4,)),),
        outputs=(TensorConfig("probabilities", "FP32", (3,)),),
        max_batch_size=64,
        max_queue_delay_us=250,
    ),
    "torchscript_gpu_unbatched": ModelConfigSpec(
        name="mlp-0123456789",
        backend="pytorch",
        inputs=(TensorConfig("INPUT__0", "FP32", (-1, 256)),),
        outputs=(TensorConfig("OUTPUT__0", "FP32", (-1, 10)),),
        max_batch_size=0,
        default_model_filename="model.pt",
        instance_kind="gpu",
        instance_count=2,
        parameters={"INTRA_OP_THREAD_COUNT": "1"},
    ),
    "recommender": ModelConfigSpec(
        name="ials-0123456789",
        backend="onnxruntime",
        inputs=(TensorConfig("USER_INDEX", "INT64", (1,)),),
        outputs=(
            TensorConfig("ITEM_INDEX", "INT64", (100,)),
            TensorConfig("SCORE", "FP32", (100,)),
        ),
        max_batch_size=64,
    ),
    "text_classifier": ModelConfigSpec(
        name="tickets-0123456789",
        backend="onnxruntime",
        inputs=(TensorConfig("input", "BYTES", (1,)),),
        outputs=(TensorConfig("probabilities", "FP32", (4,)),),
    ),
    "scalar_output_reshape": ModelConfigSpec(
        name="label-0123456789",
        backend="onnxruntime",
        inputs=(TensorConfig("input", "FP32", (4,)),),
        outputs=(TensorConfig("label", "INT64", (1,), reshape=()),),
        max_batch_size=8,
        dynamic_batching=False,
    ),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_config_matches_golden_file(case: str) -> None:
    text = render_config(SPECS[case])
    golden = GOLDEN / f"{case}.pbtxt"
    if os.environ.get("CONCH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("case", sorted(SPECS))
def test_config_parses_back_through_tritons_schema(case: str) -> None:
    parsed = text_format.Parse(render_config(SPECS[case]), pb.ModelConfig())
    assert parsed.max_batch_size == SPECS[case].max_batch_size
    assert [t.name for t in parsed.output] == [t.name for t in SPECS[case].outputs]


def test_max_batch_size_zero_is_written_explicitly() -> None:
    assert "max_batch_size: 0\n" in render_config(SPECS["torchscript_gpu_unbatched"])


def test_unbatched_model_gets_no_dynamic_batching() -> None:
    assert "dynamic_batching" not in render_config(SPECS["torchscript_gpu_unbatched"])


def test_invalid_instance_count_is_refused() -> None:
    spec = SPECS["classifier_cpu"]
    with pytest.raises(ValueError, match="instance count"):
        render_config(ModelConfigSpec(**{**spec.__dict__, "instance_count": 0}))


@pytest.mark.parametrize("case", ["classifier_cpu", "recommender", "text_classifier"])
def test_priority_levels_are_declared_only_when_asked(case: str) -> None:
    assert build_model_config(SPECS[case]).dynamic_batching.priority_levels == 0
    asked = ModelConfigSpec(**{**SPECS[case].__dict__, "priority_levels": True})
    batching = build_model_config(asked).dynamic_batching
    assert batching.priority_levels == PRIORITY_LEVEL_COUNT
    assert batching.default_priority_level == DEFAULT_PRIORITY_LEVEL


@pytest.mark.parametrize("case", ["torchscript_gpu_unbatched", "scalar_output_reshape"])
def test_models_without_dynamic_batching_declare_no_priority_levels(case: str) -> None:
    assert not build_model_config(SPECS[case]).HasField("dynamic_batching")


def test_bytes_is_written_as_tritons_type_string() -> None:
    [text] = build_model_config(SPECS["text_classifier"]).input
    assert text.data_type == pb.TYPE_STRING
