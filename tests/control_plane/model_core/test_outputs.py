"""The core's output decoding: labels, values, probabilities only when asked, BYTES as text."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from conch_manifest.schema import TensorSpec
from control_plane.model_core.outputs import decode_outputs
from tests.control_plane.model_core.test_inputs import TABULAR

SCORES = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)


def test_classifier_labels_and_probabilities_only_when_asked() -> None:
    model = replace(TABULAR, class_labels=["no", "yes"])
    plain = decode_outputs(model, {"probabilities": SCORES}, 2)
    assert plain == {"predictions": ["no", "yes"]}
    asked = decode_outputs(model, {"probabilities": SCORES}, 2, return_probabilities=True)
    assert asked["probabilities"] == SCORES.tolist()


def test_a_networks_scores_are_answered_under_their_own_name() -> None:
    network = replace(
        TABULAR,
        class_labels=None,
        outputs=(TensorSpec(name="OUTPUT__0", datatype="FP32", shape=[-1, 2]),),
    )
    answer = decode_outputs(network, {"OUTPUT__0": SCORES}, 2, return_probabilities=True)
    assert answer == {"predictions": [0, 1], "outputs": {"OUTPUT__0": SCORES.tolist()}}


def test_regressor_values_one_or_several_per_row() -> None:
    regressor = replace(TABULAR, task="regression", class_labels=None)
    one = decode_outputs(regressor, {"variable": np.array([[1.5], [2.5]], np.float32)}, 2)
    assert one == {"predictions": [1.5, 2.5]}
    two = decode_outputs(regressor, {"variable": np.array([[1, 2], [3, 4]], np.float32)}, 2)
    assert two == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}


def test_bytes_outputs_are_text_and_other_models_answer_every_output() -> None:
    other = replace(TABULAR, task="other", class_labels=None)
    text = np.array([[b"caf\xc3\xa9"], [b"\xff"]], dtype=np.object_)
    answer = decode_outputs(other, {"TEXT": text, "N": np.array([[4], [1]])}, 2)
    assert answer == {
        "predictions": [],
        "outputs": {"TEXT": [["café"], ["\ufffd"]], "N": [[4], [1]]},
    }
