"""Small Python-backend models for the gateway's tensor, priority and config tests.

The embedded Triton has only the Python backend, so these are written as
`model.py` + `config.pbtxt` into the session's repository (no manifest: the
gateway alone is under test, not the registry). Each answer is computed from
the request, so a test can tell its own answer from anyone else's.
"""

from __future__ import annotations

from pathlib import Path

# The backend stub embeds libpython and ignores PYTHONPATH (see Conch's backends).
_PREAMBLE = """import os
import sys
import time

for _path in reversed(os.environ.get("CONCH_BACKEND_SITE_PACKAGES", "").split(os.pathsep)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _input(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
"""

# TEXT (BYTES) -> UPPER (the bytes upper-cased, BYTES) and LENGTH (their length, INT64).
TEXT_INPUT, UPPER_OUTPUT, LENGTH_OUTPUT = "TEXT", "UPPER", "LENGTH"
TEXT_MAX_BATCH = 8
_TEXT_MODEL = (
    _PREAMBLE
    + f'''

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = _input(request, "{TEXT_INPUT}")
            upper = np.empty(text.shape, dtype=np.object_)
            lengths = np.empty(text.shape, dtype=np.int64)
            for index, value in np.ndenumerate(text):
                upper[index] = value.upper()
                lengths[index] = len(value)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("{UPPER_OUTPUT}", upper),
                        pb_utils.Tensor("{LENGTH_OUTPUT}", lengths),
                    ]
                )
            )
        return responses
'''
)
_TEXT_CONFIG = f"""name: "{{name}}"
backend: "python"
max_batch_size: {TEXT_MAX_BATCH}
input [ {{{{ name: "{TEXT_INPUT}" data_type: TYPE_STRING dims: [ 1 ] }}}} ]
output [
  {{{{ name: "{UPPER_OUTPUT}" data_type: TYPE_STRING dims: [ 1 ] }}}},
  {{{{ name: "{LENGTH_OUTPUT}" data_type: TYPE_INT64 dims: [ 1 ] }}}}
]
dynamic_batching {{{{ max_queue_delay_microseconds: 100 }}}}
instance_group [ {{{{ kind: KIND_CPU count: 1 }}}} ]
"""

# Numbers of each further dtype, answered so that a byte-level mix-up shows:
# X (FP64) -> DOUBLED, FLAG (BOOL) -> NEGATED, COUNT (INT32) -> NEXT (+1).
_TYPED_MODEL = (
    _PREAMBLE
    + """

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = [
                pb_utils.Tensor("DOUBLED", _input(request, "X") * 2),
                pb_utils.Tensor("NEGATED", np.logical_not(_input(request, "FLAG"))),
                pb_utils.Tensor("NEXT", (_input(request, "COUNT") + 1).astype(np.int32)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
"""
)
_TYPED_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 8
input [
  { name: "X" data_type: TYPE_FP64 dims: [ 2 ] },
  { name: "FLAG" data_type: TYPE_BOOL dims: [ 1 ] },
  { name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }
]
output [
  { name: "DOUBLED" data_type: TYPE_FP64 dims: [ 2 ] },
  { name: "NEGATED" data_type: TYPE_BOOL dims: [ 1 ] },
  { name: "NEXT" data_type: TYPE_INT32 dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

# TAG (INT64) -> TAG (the same), after EXECUTE_S of work per request. One instance,
# one request per execution, and the priority levels exported models declare: the
# order requests finish in is the order Triton's scheduler took them.
TAG_INPUT, TAG_OUTPUT = "TAG", "TAG_OUT"
PACED_EXECUTE_S = 0.02
_PACED_MODEL = (
    _PREAMBLE
    + f'''

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep({PACED_EXECUTE_S})
            tag = _input(request, "{TAG_INPUT}")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("{TAG_OUTPUT}", tag)]))
        return responses
'''
)
_PACED_CONFIG = f"""name: "{{name}}"
backend: "python"
max_batch_size: 1
input [ {{{{ name: "{TAG_INPUT}" data_type: TYPE_INT64 dims: [ 1 ] }}}} ]
output [ {{{{ name: "{TAG_OUTPUT}" data_type: TYPE_INT64 dims: [ 1 ] }}}} ]
dynamic_batching {{{{
  priority_levels: {{levels}}
  default_priority_level: {{default_level}}
}}}}
instance_group [ {{{{ kind: KIND_CPU count: 1 }}}} ]
"""


def _write(repository: Path, name: str, model_py: str, config: str) -> Path:
    root = repository / name
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "1" / "model.py").write_text(model_py)
    (root / "config.pbtxt").write_text(config)  # last: the model is complete once it exists
    return root


def write_text_model(repository: Path, name: str) -> Path:
    return _write(repository, name, _TEXT_MODEL, _TEXT_CONFIG.format(name=name))


def write_typed_model(repository: Path, name: str) -> Path:
    return _write(repository, name, _TYPED_MODEL, _TYPED_CONFIG.replace("{name}", name))


def write_paced_model(repository: Path, name: str, *, levels: int, default_level: int) -> Path:
    config = _PACED_CONFIG.format(name=name, levels=levels, default_level=default_level)
    return _write(repository, name, _PACED_MODEL, config)
