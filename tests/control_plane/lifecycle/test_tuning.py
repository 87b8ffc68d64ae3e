"""The config override a load passes to Triton: the export's config, batching retuned."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from control_plane.lifecycle.tuning import (
    GENERATION_PARAMETER,
    EngineTuning,
    override_json,
    tunable,
    tuned,
)

_EXPORTED = """
name: "m"
backend: "onnxruntime"
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 100 priority_levels: 4 default_priority_level: 3 }
"""


def _config(text: str = _EXPORTED) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_the_batching_is_retuned_and_the_priority_levels_kept() -> None:
    config = tuned(_config(), EngineTuning(max_batch_size=8, batch_timeout_us=5000), 0)
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [8]
    assert batching.max_queue_delay_microseconds == 5000
    assert (batching.priority_levels, batching.default_priority_level) == (4, 3)
    assert config.max_batch_size == 16  # the export's limit: requests are split by it
    assert GENERATION_PARAMETER not in config.parameters


def test_the_preferred_batch_never_exceeds_the_exports_max() -> None:
    config = tuned(_config(), EngineTuning(max_batch_size=500), 0)
    assert list(config.dynamic_batching.preferred_batch_size) == [16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100  # not set: kept


def test_defaults_leave_the_export_as_it_is() -> None:
    assert tuned(_config(), EngineTuning(), 0) == _config()


def test_a_model_without_a_batch_axis_or_with_another_scheduler_is_left_alone() -> None:
    no_batch = _config('name: "m" backend: "onnxruntime" max_batch_size: 0')
    sequence = _config('name: "m" max_batch_size: 4 sequence_batching { }')
    tuning = EngineTuning(max_batch_size=2, batch_timeout_us=10)
    for config in (no_batch, sequence):
        assert not tunable(config)
        assert tuned(config, tuning, 0) == config
    plain = _config('name: "m" max_batch_size: 4')  # default scheduler: a batcher is added
    assert tuned(plain, tuning, 0).dynamic_batching.max_queue_delay_microseconds == 10


def test_a_restart_generation_changes_the_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text(_EXPORTED)
    text = override_json(tmp_path, "m", EngineTuning(batch_timeout_us=250), generation=3)
    assert text is not None
    override = json.loads(text)
    assert override["parameters"][GENERATION_PARAMETER] == {"string_value": "3"}
    assert override["dynamic_batching"]["max_queue_delay_microseconds"] == "250"
    assert override["name"] == "m"


def test_an_unreadable_config_gives_no_override(tmp_path: Path) -> None:
    assert override_json(tmp_path, "missing", EngineTuning(), 0) is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.pbtxt").write_text("max_batch_size: {{")
    assert override_json(tmp_path, "bad", EngineTuning(), 0) is None
