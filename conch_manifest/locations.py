"""Where things live on disk, resolved once from the project root."""

from __future__ import annotations

import os
from pathlib import Path

# The repository checkout: conch_manifest/locations.py -> parents[1].
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Triton launch settings and the Python-based backends (not a Python package).
TRITON_CONFIG_DIR = PROJECT_ROOT / "triton" / "config"
BACKENDS_SOURCE_DIR = TRITON_CONFIG_DIR / "backends"


def state_dir() -> Path:
    """Runtime state (logs, assembled backends, demo.env). Overridable for tests."""
    return Path(os.environ.get("CONCH_STATE_DIR", PROJECT_ROOT / ".conch")).resolve()


def default_model_repository() -> Path:
    return Path(
        os.environ.get("CONCH_MODEL_REPOSITORY", PROJECT_ROOT / "model_repository")
    ).resolve()


def default_control_plane_url() -> str:
    """Where the `conch` commands find the control plane unless `--url` says otherwise:
    $CONCH_URL, else the local one on $INFERENCE_PORT (8081), as `conch serve` starts it."""
    port = os.environ.get("INFERENCE_PORT", "8081")
    return os.environ.get("CONCH_URL") or f"http://127.0.0.1:{port}"
