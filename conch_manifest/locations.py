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
