"""The README's quickstart, executed: `make run` (= `conch demo`), its curl calls,
a gRPC call that matches scikit-learn, the export -> register -> serve walkthrough,
and Ctrl-C leaving no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conch_embedded.demo.models import DEMO_SOURCES
from conch_embedded.process import free_port
from conch_manifest.locations import PROJECT_ROOT

pytestmark = pytest.mark.slow

CONCH = str(Path(sys.executable).with_name("conch"))


def _readme_blocks(section: str) -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", body, flags=re.S)


def _env_file(path: Path) -> dict[str, str]:
    script = f"set -a; source {path}; env -0"
    output = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    return dict(line.split("=", 1) for line in output.decode().split("\0") if "=" in line)


def _processes_mentioning(*needles: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in text for needle in needles):
            found.append(text)
    return found


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.state = workdir / ".conch"
        self.repository = workdir / "model_repository"
        self.ports = {
            "--port": free_port(),
            "--http-port": free_port(),
            "--grpc-port": free_port(),
            "--metrics-port": free_port(),
        }
        env = {**os.environ, "CONCH_STATE_DIR": str(self.state)}
        argv = [CONCH, "demo", "--repository", str(self.repository)]
        for option, port in self.ports.items():
            argv += [option, str(port)]
        self.log = (workdir / "demo.log").open("wb")
        self.process = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_serving(self, timeout_s: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        env_path = self.state / "demo.env"
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "demo.log").read_text()
            if env_path.exists():
                env = _env_file(env_path)
                try:
                    if httpx.get(env["CONCH_URL"] + "/inference/health").status_code == 200:
                        return env
                except httpx.TransportError:
                    pass
            time.sleep(0.5)
        log = (self.workdir / "demo.log").read_text()
        raise AssertionError(f"demo did not serve in time: {log}")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = self.process.wait(timeout=60)
        self.log.close()
        return code


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("quickstart"))
    try:
        running.wait_serving()
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_grpc_to_the_demo_tabular_model_matches_scikit_learn(demo: Demo) -> None:
    env = _env_file(demo.state / "demo.env")
    sources = demo.repository / DEMO_SOURCES
    model = joblib.load(sources / "breast_cancer.joblib")  # the demo's own trained file
    rows = np.load(sources / "breast_cancer_holdout.npy")[:16]
    client = grpcclient.InferenceServerClient(env["CONCH_TRITON_GRPC"])
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    served = client.infer(env["CONCH_DEMO_TABULAR_MODEL"], [tensor]).as_numpy("probabilities")
    expected = model.predict_proba(rows)
    assert np.abs(served - expected).max() <= 1e-5


def test_readme_calls_work_against_the_demo(demo: Demo) -> None:
    blocks = _readme_blocks("Try it")
    assert len(blocks) >= 2
    outputs = []
    for block in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=demo.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (block, result.stderr)
        outputs.append(result.stdout)
    joined = "\n".join(outputs)
    assert '"items":[{"item_id"' in joined
    assert '"slot_name":"' in joined
    assert '"status":"healthy"' in joined or '"status":"degraded"' in joined
    assert '"created":1' in joined or '"duplicates":' in joined
    results = json.loads(outputs[-1].strip().splitlines()[-1])
    assert results["slots"], results


def test_readme_walkthrough_exports_registers_and_serves_a_model(demo: Demo) -> None:
    (block,) = _readme_blocks("Your own model, end to end")
    # The block is written for the repository root: there `.venv` is the project's venv and
    # the demo serves the default model repository. Here the demo runs in its own directory.
    (demo.workdir / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    env = {**os.environ, "CONCH_MODEL_REPOSITORY": str(demo.repository)}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=demo.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (block, result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    rest = json.loads(
        next(line for line in lines if line.startswith("{") and '"predictions"' in line)
    )
    grpc = json.loads(
        next(line for line in lines if line.startswith("grpc probabilities:")).split(":", 1)[1]
    )
    model = joblib.load(demo.workdir / "iris.joblib")
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    assert rest["predictions"] == model.predict(rows).tolist()  # integers, as sklearn answers
    expected = model.predict_proba(rows)
    assert np.abs(np.array(rest["probabilities"]) - expected).max() <= 1e-5
    assert np.abs(np.array(grpc) - expected).max() <= 1e-4  # the block rounds to 4 places


def test_ctrl_c_leaves_no_process_behind(demo: Demo) -> None:
    grpc_port = demo.ports["--grpc-port"]
    assert _processes_mentioning(f"--grpc-port={grpc_port}")
    assert demo.interrupt() == 0
    time.sleep(1)
    leftovers = _processes_mentioning(f"--grpc-port={grpc_port}", str(demo.state))
    assert leftovers == []
