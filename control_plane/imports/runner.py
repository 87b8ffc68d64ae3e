"""The export as a child process: `python -m exporters.file_import`, awaited off the loop.

The child gets its request as JSON on stdin and writes its outcome to a file
(exporters/file_import.py). It runs in its own session (process group): on a
timeout or a cancelled job it is sent SIGTERM, which it turns into an orderly
exit (staged files discarded, its parity Triton stopped), and the whole group is
killed if it does not go within `STOP_GRACE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EXPORTER_MODULE = "exporters.file_import"
STOP_GRACE_S = 15.0  # time for the child to stop its parity Triton and clean up
STDERR_TAIL_BYTES = 4000


class ExportTimeoutError(Exception):
    """The child ran past its time and was stopped."""


async def run_exporter(request: dict[str, Any], result_path: Path, timeout_s: float) -> Any:
    """The child's outcome (`{"ok": ...}`); ExportTimeoutError past `timeout_s`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        EXPORTER_MODULE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,  # libraries print; the outcome is a file
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    body = json.dumps({**request, "result_path": str(result_path)}).encode()
    try:
        _, stderr = await asyncio.wait_for(process.communicate(body), timeout_s)
    except TimeoutError:
        await _stop(process)
        raise ExportTimeoutError(f"the export did not finish within {timeout_s:g} s") from None
    except BaseException:  # cancelled (shutdown): the child must not outlive the job
        await _stop(process)
        raise
    if stderr:
        logger.info("exporter child said: %s", stderr[-STDERR_TAIL_BYTES:].decode(errors="replace"))
    try:
        return json.loads(await asyncio.to_thread(result_path.read_text))
    except (OSError, ValueError):
        tail = stderr[-STDERR_TAIL_BYTES:].decode(errors="replace") if stderr else ""
        logger.warning("exporter child exited %s without a result: %s", process.returncode, tail)
        return {
            "ok": False,
            "kind": "internal",
            "error": f"the exporter process exited with status {process.returncode} "
            "without a result (the server log has its output)",
            "steps": [],
        }


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE_S)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)  # the child leads its own group (start_new_session)
