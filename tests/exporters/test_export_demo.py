"""The demo models: built once, offline, and found again at once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
from typer.testing import CliRunner

from conch_embedded.demo.models import DEMO_INDEX, DEMO_SOURCES, _tabular_classifier, build_demo
from conch_manifest.layout import load_manifest, verify_files
from conch_manifest.schema import (
    MANIFEST_FILENAME,
    RECOMMENDER_INPUT,
    RECOMMENDER_SCORES,
    sha256_file,
)
from control_plane.cli import with_commands
from exporters.errors import ExportError
from exporters.pipeline import no_progress
from exporters.session import ExportSession
from exporters.text import text_tensor


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

    # The text classifier answers a BYTES request with the source pipeline's labels.
    text = load_manifest(model_repository, demo.text_classifier)
    assert (text.inputs[0].datatype, text.inputs[0].shape) == ("BYTES", [-1, 1])
    labels = text.outputs[0].typed_class_labels()
    assert labels == ["account", "billing", "shipping", "technical"]
    sources = model_repository / DEMO_SOURCES
    pipeline = joblib.load(sources / "support_tickets.joblib")
    tickets = (sources / "support_tickets_holdout.txt").read_text().splitlines()[:64]
    got = served(demo.text_classifier, {"input": text_tensor(tickets)}, ["probabilities"])
    assert [labels[i] for i in got["probabilities"].argmax(axis=1)] == list(
        pipeline.predict(tickets)
    )

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
    assert f"text_classifier: {demo.text_classifier}" in cli.output


def test_a_demo_left_by_an_older_conch_is_refused_with_what_to_do(
    tmp_path: Path, repository_snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    """An older Conch published the same model bytes with another config (here another
    queue delay): published entries never change, so the rebuild says to remove them."""
    repository = tmp_path / "repo"
    with ExportSession(repository) as session:
        name = _tabular_classifier(tmp_path, session, no_progress)
    config = repository / name / "config.pbtxt"
    current = config.read_text()
    older = current.replace(
        "max_queue_delay_microseconds: 100", "max_queue_delay_microseconds: 250"
    )
    assert older != current
    config.write_text(older)
    manifest_path = repository / name / MANIFEST_FILENAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["config.pbtxt"] = sha256_file(config)
    manifest_path.write_text(json.dumps(manifest))
    before = repository_snapshot(repository)

    with pytest.raises(ExportError, match="built by an older Conch: remove them"):
        build_demo(repository)
    # The published models are untouched (the demo keeps its trained sources beside them).
    after = repository_snapshot(repository)
    assert {k: v for k, v in after.items() if not k.startswith(DEMO_SOURCES)} == before
