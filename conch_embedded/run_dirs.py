"""Scratch directories of the embedded Triton and Redis, and their removal once the
process that owned them is gone."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from conch_manifest.locations import state_dir

# Each embedded Triton or Redis works in a scratch directory of the state directory,
# `<kind>-<pid>-<random>`, <pid> being the Conch process that owns it, with an `owner`
# file holding that process's start time, so a pid reused since is not taken for it.
RUN_DIR_KINDS = ("triton", "redis")
_OWNER_FILE = "owner"


def new_run_dir(kind: str) -> Path:
    """A fresh scratch directory owned by this process."""
    assert kind in RUN_DIR_KINDS
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{kind}-{os.getpid()}-", dir=state))
    (path / _OWNER_FILE).write_text(_process_identity(os.getpid()) or "")
    return path


def remove_stale_run_dirs() -> list[Path]:
    """Remove the scratch directories whose owner is gone (a run killed by SIGKILL).

    A directory of a live process, this one or a concurrent run, is never touched;
    nor is one named otherwise (an older Conch's: its owner cannot be told)."""
    state = state_dir()
    if not state.is_dir():
        return []
    removed = []
    for path in sorted(state.iterdir()):
        owner = _owner_pid(path.name)
        if owner is None or not path.is_dir() or _owner_alive(path, owner):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _owner_pid(name: str) -> int | None:
    kind, _, rest = name.partition("-")
    pid, separator, _ = rest.partition("-")
    if kind not in RUN_DIR_KINDS or not separator or not pid.isdigit():
        return None
    return int(pid)


def _owner_alive(path: Path, pid: int) -> bool:
    identity = _process_identity(pid)
    if identity is None:
        return False
    if not identity:
        return True  # alive, but its start time cannot be read: keep it
    try:
        recorded = (path / _OWNER_FILE).read_text()
    except FileNotFoundError:
        return True  # its owner is writing the file right now
    return recorded in ("", identity)  # "": written where /proc could not be read


def _process_identity(pid: int) -> str | None:
    """ "<pid> <start time>" of a live process, "" if it cannot be read, None if there
    is no such process (or only a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        return ""
    # Fields after the ")" closing the command name: state is the first, start time
    # the twentieth (field 22 of proc(5)).
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return f"{pid} {fields[19]}"
