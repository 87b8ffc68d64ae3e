"""The demo models: built once, offline, and found again at once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conch_embedded.demo.models import DEMO_INDEX, build_demo
from conch_manifest.layout import load_manifest, verify_files
from conch_manifest.schema import RECOMMENDER_INPUT, RECOMMENDER_SCORES
from control_plane.cli import with_commands


@pytest.mark.slow
def test_build_demo_then_rebuild_is_instant(model_repository: Path, served) -> None:
    demo = build_demo(model_repository)
    assert (model_repository / DEMO_INDEX).is_file()
    assert set(demo.recommenders) == {"ials", "item_knn"}
    for name in demo.triton_names():
        manifest = load_manifest(model_repository, name)
        assert manifest.parity.passed, name
        assert verify_files(model_repository, manifest) == []
    assert load_manifest(model_repository, demo.mlp_torchscript).backend == "pytorch"
    assert load_manifest(model_repository, demo.tabular_classifier).outputs[0].class_labels

    ials = load_manifest(model_repository, demo.recommenders["ials"]).recommender
    assert ials is not None
    assert set(demo.demo_user_ids) <= set(ials.user_ids)
    users = np.array([[ials.user_ids.index(u)] for u in demo.demo_user_ids], dtype=np.int64)
    scores = served(demo.recommenders["ials"], {RECOMMENDER_INPUT: users}, [RECOMMENDER_SCORES])
    assert np.isfinite(scores[RECOMMENDER_SCORES][:, :10]).all()

    started = time.monotonic()
    again = build_demo(model_repository)
    assert time.monotonic() - started < 2.0
    assert again == demo

    cli = CliRunner().invoke(
        with_commands("demo"), ["demo-models", "--repository", str(model_repository)]
    )
    assert cli.exit_code == 0, cli.output
    assert f"mlp_torchscript: {demo.mlp_torchscript}" in cli.output
