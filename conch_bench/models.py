"""The models a benchmark runs, in a repository of its own, plus their config variants.

The suite prefers the demo models (`conch_embedded.demo.models.build_demo`); when that is not
available it exports two small stand-ins itself (a scikit-learn logistic
regression and a torch MLP, both to ONNX). Every model gets a `<name>__nobatch`
twin: the same model file, the config without `dynamic_batching`, so batching
on/off is measured side by side in one Triton. The models of the priority pass
also get a `<name>__priority` twin whose config declares Triton's priority
levels (opt-in in exports: they cost throughput, docs/PERFORMANCE.md). Configs
are edited through Triton's protobuf schema, never as text; a twin's manifest
names the twin, so Conch can register it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from conch_manifest.priorities import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVEL_COUNT
from conch_manifest.schema import MANIFEST_FILENAME, Manifest, sha256_file

InstanceKind = Literal["cpu", "gpu"]
NOBATCH_SUFFIX = "__nobatch"
PRIORITY_SUFFIX = "__priority"
GPU_SUFFIX = "__gpu"
TABULAR_FEATURES = 16
MLP_SHAPE = (256, 1024, 1024, 10)


@dataclass(frozen=True)
class BenchModel:
    """One model under test and how each door calls it."""

    key: str  # "tabular", "mlp", "recommender"
    triton_name: str
    onnx_path: Path | None  # what the plain-FastAPI baseline loads (None: no baseline arm)
    rest_template: str  # Conch REST body template (see targets.render_bodies)
    features: int = 0  # $DATA columns
    int_high: int = 2  # integer inputs are drawn from [0, int_high)
    user_ids: tuple[str, ...] = field(default_factory=tuple)
    priority_name: str | None = None  # its `__priority` twin, when one was built

    @property
    def nobatch_name(self) -> str:
        return self.triton_name + NOBATCH_SUFFIX


def read_config(model_dir: Path) -> pb.ModelConfig:
    config = pb.ModelConfig()
    text_format.Parse((model_dir / "config.pbtxt").read_text(), config)
    return config


def write_config(model_dir: Path, config: pb.ModelConfig) -> None:
    text = text_format.MessageToString(config)
    if config.max_batch_size == 0:
        # proto3 drops zero values; Triton would then guess the batching itself.
        text = f"max_batch_size: 0\n{text}"
    (model_dir / "config.pbtxt").write_text(text)


def add_variant(
    repository: Path,
    source_name: str,
    name: str,
    *,
    dynamic_batching: bool = True,
    instance_kind: InstanceKind | None = None,
    priority_levels: bool = False,
) -> str:
    """Copy a model under another name with its config changed; returns the name.

    The source stays untouched (its manifest still matches its files), and the
    model file is hard-linked: a variant must run the very same model.
    """
    source = repository / source_name
    target = repository / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=_link_or_copy)
    (target / "config.pbtxt").unlink()
    config = read_config(source)
    config.name = name
    if not dynamic_batching:
        config.ClearField("dynamic_batching")
    if instance_kind is not None:
        del config.instance_group[:]
        gpu = instance_kind == "gpu"
        kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
        config.instance_group.add(kind=kind, count=1)
    if priority_levels:
        # As the exporters write them (exporters/config.py): the levels the control
        # plane sends, and the default for a request that names none.
        config.dynamic_batching.priority_levels = PRIORITY_LEVEL_COUNT
        config.dynamic_batching.default_priority_level = DEFAULT_PRIORITY_LEVEL
    write_config(target, config)
    _rename_manifest(target, name)
    return name


def _rename_manifest(model_dir: Path, name: str) -> None:
    """The copied manifest made the twin's: its name, its files' hashes (the config differs)."""
    path = model_dir / MANIFEST_FILENAME
    if not path.is_file():
        return  # the stand-in exports have none
    manifest = Manifest.model_validate_json(path.read_bytes())
    files = {relative: sha256_file(model_dir / relative) for relative in manifest.files}
    path.unlink()  # hard-linked to the source's manifest: never write through it
    renamed = manifest.model_copy(update={"triton_name": name, "files": files})
    path.write_text(renamed.model_dump_json(indent=2))


def add_nobatch_variant(repository: Path, triton_name: str) -> str:
    """`<name>__nobatch`: the same model and config without dynamic batching."""
    name = triton_name + NOBATCH_SUFFIX
    return add_variant(repository, triton_name, name, dynamic_batching=False)


def add_priority_variant(repository: Path, triton_name: str) -> str:
    """`<name>__priority`: the same model and config with Triton's priority levels declared."""
    name = triton_name + PRIORITY_SUFFIX
    return add_variant(repository, triton_name, name, priority_levels=True)


def _link_or_copy(src: str, dst: str) -> Any:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _onnx_config(
    name: str, inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]
) -> pb.ModelConfig:
    config = pb.ModelConfig(name=name, backend="onnxruntime", max_batch_size=256)
    for tensor_name, datatype, dims in inputs:
        config.input.add(
            name=tensor_name, data_type=pb.DataType.Value(f"TYPE_{datatype}"), dims=dims
        )
    for tensor_name, datatype, dims in outputs:
        config.output.add(
            name=tensor_name, data_type=pb.DataType.Value(f"TYPE_{datatype}"), dims=dims
        )
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    config.dynamic_batching.max_queue_delay_microseconds = 100
    return config


def export_tabular(repository: Path, name: str = "bench_tabular") -> BenchModel:
    """A logistic regression on synthetic data, via skl2onnx (probabilities only)."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, TABULAR_FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = LogisticRegression(max_iter=200).fit(x, y)
    onnx_model = to_onnx(model, x[:1], options={"zipmap": False})
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "1" / "model.onnx"
    onnx_path.write_bytes(onnx_model.SerializeToString())
    config = _onnx_config(
        name,
        [("X", "FP32", [TABULAR_FEATURES])],
        [("probabilities", "FP32", [2])],
    )
    write_config(model_dir, config)
    return BenchModel("tabular", name, onnx_path, '{"data": $DATA}', features=TABULAR_FEATURES)


def export_mlp(repository: Path, name: str = "bench_mlp") -> BenchModel:
    """A float MLP (256 -> 1024 -> 1024 -> 10) exported from torch to ONNX."""
    import torch

    torch.manual_seed(0)
    d_in, h1, h2, d_out = MLP_SHAPE
    layers = [torch.nn.Linear(d_in, h1), torch.nn.ReLU(), torch.nn.Linear(h1, h2)]
    module = torch.nn.Sequential(*layers, torch.nn.ReLU(), torch.nn.Linear(h2, d_out)).eval()
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "1" / "model.onnx"
    torch.onnx.export(
        module,
        (torch.zeros(1, d_in),),
        str(onnx_path),
        input_names=["INPUT"],
        output_names=["OUTPUT"],
        dynamic_axes={"INPUT": {0: "batch"}, "OUTPUT": {0: "batch"}},
        dynamo=False,  # the TorchScript exporter needs no onnxscript
    )
    write_config(
        model_dir, _onnx_config(name, [("INPUT", "FP32", [d_in])], [("OUTPUT", "FP32", [d_out])])
    )
    return BenchModel("mlp", name, onnx_path, '{"data": $DATA}', features=d_in)


def _from_demo(repository: Path, instance_kind: InstanceKind) -> list[BenchModel] | None:
    """The demo models when `conch_embedded.demo` exists (it is optional for the suite)."""
    try:
        from conch_embedded.demo.models import build_demo
    except ImportError:
        return None
    demo = build_demo(repository)

    def name_of(item: Any) -> str:
        return str(getattr(item, "triton_name", item))

    models = []
    tabular = name_of(demo.tabular_classifier)
    models.append(_described(repository, "tabular", tabular))
    # On a GPU the MLP runs as TorchScript through the pytorch backend: the GPU
    # machines have CUDA torch but no onnxruntime-gpu.
    mlp = demo.mlp_torchscript if instance_kind == "gpu" else demo.mlp
    models.append(_described(repository, "mlp", name_of(mlp)))
    recommenders = getattr(demo, "recommenders", {}) or {}
    if recommenders:
        key = "ials" if "ials" in recommenders else next(iter(recommenders))
        users = tuple(str(u) for u in getattr(demo, "demo_user_ids", ()))
        models.append(_described(repository, "recommender", name_of(recommenders[key]), users))
    return models


def _described(
    repository: Path, key: str, triton_name: str, user_ids: tuple[str, ...] = ()
) -> BenchModel:
    """A BenchModel from the model's manifest (inputs, recommender users)."""
    from conch_manifest.layout import load_manifest

    manifest = load_manifest(repository, triton_name)
    onnx_path = repository / triton_name / str(manifest.version) / "model.onnx"
    features = 0
    if manifest.inputs and manifest.inputs[0].shape:
        features = max(int(manifest.inputs[0].shape[-1]), 0)
    if manifest.recommender is not None:
        return BenchModel(
            key,
            triton_name,
            None,  # the baseline takes float rows; a recommender has no such door
            '{"user_id": "$USER_ID", "cutoff": 10}',
            int_high=len(manifest.recommender.user_ids),
            user_ids=user_ids or tuple(manifest.recommender.user_ids[:64]),
        )
    return BenchModel(
        key,
        triton_name,
        onnx_path if onnx_path.is_file() else None,
        '{"data": $DATA}',
        features=features,
    )


def build_bench_models(
    repository: Path,
    *,
    instance_kind: InstanceKind = "cpu",
    use_demo: bool = True,
    keys: tuple[str, ...] = ("tabular", "mlp", "recommender"),
    priority_keys: tuple[str, ...] = (),
) -> list[BenchModel]:
    """Export (or reuse) the models and add their variants.

    With `instance_kind="gpu"`, models on the pytorch backend are served from a
    `<name>__gpu` variant with KIND_GPU instances (the others stay on the CPU:
    onnxruntime-gpu is not on the GPU machines). Every served model gets its
    `__nobatch` twin; those in `priority_keys` a `__priority` twin too.
    """
    repository.mkdir(parents=True, exist_ok=True)
    models = _from_demo(repository, instance_kind) if use_demo else None
    if models is None:
        exporters = {"tabular": export_tabular, "mlp": export_mlp}
        models = [export(repository) for key, export in exporters.items() if key in keys]
    served = []
    for model in (m for m in models if m.key in keys):
        if (
            instance_kind == "gpu"
            and read_config(repository / model.triton_name).backend == "pytorch"
        ):
            name = add_variant(
                repository, model.triton_name, model.triton_name + GPU_SUFFIX, instance_kind="gpu"
            )
            model = replace(model, triton_name=name)
        add_nobatch_variant(repository, model.triton_name)
        if model.key in priority_keys:
            twin = add_priority_variant(repository, model.triton_name)
            model = replace(model, priority_name=twin)
        served.append(model)
    return served
