"""The embedded tritonserver: start, readiness, clear start-up errors, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from conch_embedded import triton_server as embedded
from conch_embedded.process import free_port, processes_in_group
from conch_embedded.triton_server import EmbeddedTriton, TritonStartError
from tests.control_plane.recommender_model import write_recommender


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


def test_running_server_answers_grpc_in_explicit_mode(triton: EmbeddedTriton) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    assert client.is_server_live()
    metadata = client.get_server_metadata()
    assert metadata.version.startswith("2.")
    # Explicit model control: nothing is loaded until asked.
    with pytest.raises(Exception, match=r"failed to load|not found|no version"):
        client.load_model("no-such-model")


def test_port_taken_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        server = EmbeddedTriton(tmp_path, **{**_ports(), "grpc_port": taken})
        with pytest.raises(TritonStartError, match=f"gRPC port {taken} is already in use"):
            server.start()
    assert not server.running()


def test_missing_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="does not exist"):
        EmbeddedTriton(tmp_path / "absent", **_ports()).start()


def test_missing_binary_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A broken install cannot be produced on demand by a real package: fake the lookup.
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TritonStartError, match="tritonserver binary not found"):
        EmbeddedTriton(tmp_path, **_ports()).start()


def test_missing_shared_libpython_is_explained() -> None:
    with pytest.raises(
        TritonStartError, match=r"libpython9\.99\.so\.1\.0 not found.*enable-shared"
    ):
        embedded._shared_libpython_dir("9.99")


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    server = EmbeddedTriton(tmp_path, **_ports()).start()
    assert server._process is not None and server._process.pid is not None
    pid = server._process.pid
    server.stop()
    assert _wait_gone(pid, 1.0)


def test_triton_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed without cleanup (SIGKILL) still takes tritonserver with it."""
    ports = _ports()
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from conch_embedded.triton_server import EmbeddedTriton\n"
        f"t = EmbeddedTriton(Path({str(tmp_path)!r}), **{ports!r}).start()\n"
        "print(t._process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    triton_pid = int(parent.stdout.readline())
    assert _alive(triton_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_gone(triton_pid), "tritonserver outlived its killed parent"


def test_killed_server_takes_its_stubs_and_their_shared_memory(tmp_path: Path) -> None:
    """Triton SIGKILLed: nobody shuts its backend stubs down, so stop() must."""
    write_recommender(tmp_path, "orphans", seed=5)
    server = EmbeddedTriton(tmp_path, **_ports(), load_models=["orphans"]).start()
    try:
        assert server._process is not None and server._process.pid is not None
        leader = server._process.pid
        stubs = [pid for pid in processes_in_group(leader) if pid != leader]
        assert stubs, "the model runs in a Python backend stub"
        regions = [
            Path("/dev/shm") / Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[2].decode()
            for pid in stubs
        ]
        assert all(region.exists() for region in regions)
        os.kill(leader, signal.SIGKILL)
        process = server._process
        # Not _wait_gone: its main thread turns zombie before the other threads are
        # gone, and only then does the kernel report the exit.
        deadline = time.monotonic() + 15
        while process.exit_code() is None:
            assert time.monotonic() < deadline, "tritonserver did not exit after SIGKILL"
            time.sleep(0.05)
        assert process.exit_code() == -signal.SIGKILL
    finally:
        server.stop()
    assert not any(_alive(pid) for pid in stubs)
    assert not any(region.exists() for region in regions), "stub shared memory leaked"
