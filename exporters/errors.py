"""The one error an export raises: its message is a single line a user can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporters.steps import StepRecord


class ExportError(RuntimeError):
    """The export was refused or failed; nothing was published to the repository.

    `steps` is the step report when the error ended a pipeline run (empty when it
    was raised before any step started, e.g. by name validation).
    """

    steps: tuple[StepRecord, ...] = ()


class PublishedDifferentlyError(ExportError):
    """The same model bytes are already published under this name with another
    config.pbtxt (other serving options, or a config an older Conch wrote)."""
