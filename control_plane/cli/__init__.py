"""The `conch` command line: export, deploy, manage keys and serve."""

from __future__ import annotations

import typer

from control_plane.cli import bench, demo, manage, serve
from exporters import cli as export_cli

app = typer.Typer(
    name="conch",
    help="Conch: serve trained models through NVIDIA Triton behind a FastAPI control plane.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(export_cli.app, name="export")
serve.register(app)
demo.register(app)
manage.register(app)
bench.register(app)


def main() -> None:
    app()
