"""A tabular regressor that sleeps on demand, served by Triton's Python backend.

No ONNX graph can be made reliably slow, so this model is Python: its answer
is the row's sum, and before answering it sleeps as many seconds as the largest
first feature of the batch asks (0 for the lifecycle's all-zeros warm-up). A
real Triton, really late: the deadline is met or missed in Triton's own queue.
No exporter writes Python-backend models; the manifest only has to describe the
tensors and hash the files, which is all the control plane reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from conch_manifest.layout import manifest_path
from conch_manifest.schema import Manifest, ParityResult, TensorSpec, sha256_file

INPUT, OUTPUT = "INPUT", "VALUE"
N_FEATURES = 2
MAX_SLEEP_S = 30.0  # a typo in a test must not hold a Triton instance for long

_MODEL_PY = f'''"""Sleeps row[0] seconds (at most {MAX_SLEEP_S:.0f}), then answers row sums."""

import os
import sys
import time

# The backend stub embeds libpython and ignores PYTHONPATH (see Conch's backends).
for _path in reversed(os.environ.get("CONCH_BACKEND_SITE_PACKAGES", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "{INPUT}").as_numpy()
            time.sleep(min(max(float(rows[:, 0].max()), 0.0), {MAX_SLEEP_S}))
            value = rows.sum(axis=1, keepdims=True).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("{OUTPUT}", value)]))
        return responses
'''

# Two instances: a request still sleeping after its caller gave up must not
# queue the next test's quick request behind it.
_CONFIG = f"""name: "{{name}}"
backend: "python"
max_batch_size: 8
input [ {{{{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {N_FEATURES} ] }}}} ]
output [ {{{{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ 1 ] }}}} ]
instance_group [ {{{{ kind: KIND_CPU count: 2 }}}} ]
"""


def write_slow_model(repository: Path, triton_name: str) -> Path:
    root = repository / triton_name
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "1" / "model.py").write_text(_MODEL_PY)
    (root / "config.pbtxt").write_text(_CONFIG.format(name=triton_name))
    files = {rel: sha256_file(root / rel) for rel in ("1/model.py", "config.pbtxt")}
    manifest = Manifest(
        name=f"{triton_name}-sleepy",
        triton_name=triton_name,
        framework="pytorch",
        task="regression",
        format="torchscript",
        backend="python",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        files=files,
        inputs=[TensorSpec(name=INPUT, datatype="FP32", shape=[-1, N_FEATURES])],
        outputs=[TensorSpec(name=OUTPUT, datatype="FP32", shape=[-1, 1])],
        max_batch_size=8,
        parity=ParityResult(passed=True, rows=0),
    )
    path = manifest_path(repository, triton_name)
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True))
    return root
