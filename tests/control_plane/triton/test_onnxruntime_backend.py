"""Session options of the Python-based onnxruntime backend, without a Triton.

The backend module imports the stub's `triton_python_backend_utils`, which only
exists inside a running stub; a stand-in module is enough for `_session_options`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import pytest

from conch_manifest.locations import BACKENDS_SOURCE_DIR

SPINNING = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def backend(monkeypatch_module: pytest.MonkeyPatch) -> Any:
    monkeypatch_module.setitem(
        sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils")
    )
    path = BACKENDS_SOURCE_DIR / "onnxruntime" / "model.py"
    spec = importlib.util.spec_from_file_location("conch_onnxruntime_backend", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_instances_default_to_one_thread_that_does_not_spin(backend: Any) -> None:
    options = backend._session_options({}, cpu_instance=True)
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert [options.get_session_config_entry(key) for key in SPINNING] == ["0", "0"]


def test_config_parameters_override_the_cpu_defaults(backend: Any) -> None:
    parameters = {"intra_op_thread_count": "0", "session.intra_op.allow_spinning": "1"}
    options = backend._session_options(parameters, cpu_instance=True)
    assert options.intra_op_num_threads == 0  # onnxruntime's own default: a thread per core
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_gpu_instances_keep_onnxruntimes_defaults(backend: Any) -> None:
    options = backend._session_options({"intra_op_thread_count": "4"}, cpu_instance=False)
    assert options.intra_op_num_threads == 4
    assert options.inter_op_num_threads == 0
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry("session.intra_op.allow_spinning")
