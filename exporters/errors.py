"""The one error an export raises: its message is a single line a user can act on."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The export was refused or failed; nothing was published to the repository."""
