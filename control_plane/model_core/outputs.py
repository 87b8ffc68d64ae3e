"""Triton's output tensors -> what a prediction answers, by what the model is.

- a classifier whose scores are one column per class: `predictions` are the
  winning labels in the model's own type (1, not "1"; an index when the manifest
  names no labels). Its `probabilities` (the tabular exporters' output of that
  name) come only when asked; a network's scores need not be probabilities, so
  they are answered under their own names in `outputs` instead.
- a regressor with one output: `predictions` are its values (a list per row when
  it predicts several).
- anything else: `predictions` is empty and `outputs` holds every tensor by name.

BYTES outputs are answered as text (UTF-8; an undecodable byte becomes U+FFFD).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from control_plane.model_core.handle import ModelHandle

PROBABILITIES = "probabilities"  # the tabular exporters' classifier output

Payload = dict[str, Any]


def decode_outputs(
    handle: ModelHandle,
    outputs: dict[str, npt.NDArray[Any]],
    n_rows: int,
    *,
    return_probabilities: bool = False,
) -> Payload:
    """`predictions`, plus `probabilities` or `outputs` where they apply (see above)."""
    scores_name = class_scores_output(handle, outputs)
    if scores_name is not None:
        scores = outputs[scores_name]
        winners = scores.argmax(axis=1).tolist()
        labels = handle.class_labels
        payload: Payload = {"predictions": [labels[i] for i in winners] if labels else winners}
        if scores_name == PROBABILITIES:
            if return_probabilities:
                payload["probabilities"] = scores.tolist()
        elif return_probabilities:
            payload["outputs"] = as_json(outputs)
        return payload
    if handle.task == "regression" and len(outputs) == 1:
        values = next(iter(outputs.values()))
        if values.dtype.kind in "fiub":
            flat = values.size == n_rows
            return {"predictions": (values.reshape(n_rows) if flat else values).tolist()}
    return {"predictions": [], "outputs": as_json(outputs)}


def class_scores_output(handle: ModelHandle, outputs: dict[str, npt.NDArray[Any]]) -> str | None:
    """The output whose columns are the classes: `probabilities` (tabular exporters), else
    a network's first output (exporters/torch_exporter.py labels OUTPUT__0)."""
    if handle.task != "classification" or not handle.output_names:
        return None
    name = PROBABILITIES if PROBABILITIES in outputs else handle.output_names[0]
    scores = outputs.get(name)
    labels = handle.class_labels
    if scores is None or scores.ndim != 2 or scores.dtype.kind != "f":
        return None  # not a class-per-column matrix: answered as raw outputs
    if labels and scores.shape[1] != len(labels):
        return None
    return name


def as_json(outputs: dict[str, npt.NDArray[Any]]) -> dict[str, list[Any]]:
    """Every output as nested lists; BYTES as text."""
    return {name: _values(array) for name, array in outputs.items()}


def _values(array: npt.NDArray[Any]) -> list[Any]:
    if array.dtype.kind not in "OS":
        values: list[Any] = array.tolist()
        return values
    texts = np.empty(array.shape, dtype=np.object_)
    for index, element in np.ndenumerate(array):
        texts[index] = (
            element.decode("utf-8", "replace") if isinstance(element, bytes) else str(element)
        )
    decoded: list[Any] = texts.tolist()
    return decoded
