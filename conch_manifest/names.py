"""Model names: one rule for the exporters (which create the directory) and the
registry (which reads it)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

# Triton refuses '/' and '..' in a model name (core's
# ValidateModelName) and its repository scan skips hidden directories; Conch also
# keeps names portable: no quoting needed in a URL, a shell or a log line.
MAX_MODEL_NAME_LENGTH = 200  # the registry's column (control_plane/db/models.py)
MODEL_NAME_PATTERN = r"^[A-Za-z0-9](\.?[A-Za-z0-9_-])*$"
MODEL_NAME_RULE = (
    "ASCII letters, digits, '_', '-' and single dots, starting with a letter or digit "
    "and not ending with a dot"
)
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_.-]*")


class InvalidModelNameError(ValueError):
    pass


def model_name_problem(name: str, max_length: int = MAX_MODEL_NAME_LENGTH) -> str | None:
    """What makes `name` unusable as a model directory, None when it is fine."""
    if not name:
        return "it is empty"
    if len(name) > max_length:
        return f"it has {len(name)} characters, at most {max_length} are allowed"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if ".." in name:
        return "it contains '..'"
    if name.startswith("."):
        return "it starts with a dot (Triton ignores hidden directories)"
    if not _NAME_CHARACTERS.fullmatch(name):
        return "it contains a character other than ASCII letters, digits, '_', '-' and '.'"
    if not _MODEL_NAME.fullmatch(name):
        return "it must start with a letter or digit and not end with a dot"
    return None


def check_model_name(name: str, max_length: int = MAX_MODEL_NAME_LENGTH) -> str:
    """`name` unchanged, or InvalidModelNameError saying the rule (never echoing the name)."""
    problem = model_name_problem(name, max_length)
    if problem is not None:
        raise InvalidModelNameError(
            f"invalid model name: {problem}; use {MODEL_NAME_RULE} ({max_length} at most)"
        )
    return name


# A model repository directory name, as a pydantic type (manifests, request bodies).
ModelName = Annotated[
    str,
    AfterValidator(check_model_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_MODEL_NAME_LENGTH,
            "pattern": MODEL_NAME_PATTERN,
        }
    ),
]
