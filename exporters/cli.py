"""`conch export ...`: one subcommand per framework."""

from __future__ import annotations

import typer

app = typer.Typer(help="Export a trained model into the Triton model repository.", no_args_is_help=True)
