"""Triton's failures as Conch errors: 502 (refused), 503 (unreachable), 504 (deadline).

The reason Triton gave is kept, on one line and without this host's paths.
"""

from __future__ import annotations

import re

from tritonclient.utils import InferenceServerException

from control_plane.core.errors import (
    ModelLoadError,
    TritonError,
    TritonTimeoutError,
    TritonUnavailableError,
)

# Triton's words for "that model is not (or no longer) loaded here".
_NOT_LOADED_HINTS = ("unknown model", "is not found", "not ready", "unavailable model")

# Triton's reasons carry Python tracebacks and absolute paths (the model file, the
# backends' directory): callers get the reason, never this host's file layout.
_TRACEBACK = re.compile(r"\n\s*At:\n.*", re.DOTALL)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"():;,]+/)+([^\s/'\"():;,]*)")
# gRPC names the peer it could not reach ("ipv4:127.0.0.1:8001"): no hosts either.
_ADDRESS = re.compile(
    r"(?:ipv[46]:)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\]|localhost)(?::\d+)?"
)
MAX_REASON_CHARS = 500


def short_reason(text: str) -> str:
    """Triton's reason on one line: no traceback, each absolute path cut to its last part."""
    text = _TRACEBACK.sub("", text)
    text = _ABSOLUTE_PATH.sub(lambda match: match.group(1) or "<directory>", text)
    text = _ADDRESS.sub("<address>", text)
    text = " ".join(text.split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


def triton_error(exc: InferenceServerException, action: str) -> TritonError:
    status = str(exc.status() or "")
    reason = short_reason(exc.message() or str(exc))
    message = f"Triton {action} failed: {reason}"
    if "UNAVAILABLE" in status or status == "HTTP 503":  # gRPC's word, or HTTP's
        return TritonUnavailableError(message, triton_status=status)
    if "DEADLINE_EXCEEDED" in status:
        return TritonTimeoutError(message, triton_status=status)
    return TritonError(message, triton_status=status)


def load_error(exc: InferenceServerException, name: str) -> TritonError | ModelLoadError:
    """Triton down or too slow (503/504), or the model itself refused to load (500)."""
    status = str(exc.status() or "")
    if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status:
        return triton_error(exc, "model load")
    message = f"model {name!r} could not be loaded: {short_reason(exc.message() or str(exc))}"
    return ModelLoadError(message, triton_name=name)


def is_not_loaded(exc: InferenceServerException) -> bool:
    text = (exc.message() or str(exc)).lower()
    return any(hint in text for hint in _NOT_LOADED_HINTS)
