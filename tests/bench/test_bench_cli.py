"""`conch bench` is wired into the root CLI and validates its list options."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from conch_bench.cli import _ints
from control_plane.cli import with_commands

app = with_commands("bench")


def test_bench_subcommands_are_registered() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    for command in ("run", "suite", "baseline", "bare-torch", "calls", "device-info", "report"):
        assert command in result.output


def test_list_options_parse_and_refuse_nonsense() -> None:
    assert _ints("1,16, 64") == (1, 16, 64)
    with pytest.raises(typer.BadParameter):
        _ints("1,x")
    with pytest.raises(typer.BadParameter):
        _ints("0")
