"""Config variants: the no-batching and GPU twins change only what they say."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from conch_bench.models import add_nobatch_variant, add_variant, export_tabular, read_config


def test_variants_share_the_model_file(tmp_path: Path) -> None:
    model = export_tabular(tmp_path, name="tab")
    source = read_config(tmp_path / "tab")
    assert source.HasField("dynamic_batching")

    name = add_nobatch_variant(tmp_path, "tab")
    variant = read_config(tmp_path / name)
    assert name == "tab__nobatch" == model.nobatch_name
    assert variant.name == name and not variant.HasField("dynamic_batching")
    assert variant.max_batch_size == source.max_batch_size
    assert list(variant.input) == list(source.input)
    # Hard-linked: the very same file, not a copy that could drift.
    original = tmp_path / "tab" / "1" / "model.onnx"
    assert (tmp_path / name / "1" / "model.onnx").stat().st_ino == original.stat().st_ino

    gpu = read_config(tmp_path / add_variant(tmp_path, "tab", "tab__gpu", instance_kind="gpu"))
    assert [g.kind for g in gpu.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    assert gpu.HasField("dynamic_batching")
    assert read_config(tmp_path / "tab") == source
