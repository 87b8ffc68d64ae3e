"""The `conch` command line: export, deploy, manage keys and jobs, and serve.

`export`, `demo` and `bench` come from packages beside the control plane
(`exporters`, `conch_embedded.demo`, `conch_bench`); they are imported only when
their command is run (or for `--help`), so `conch serve` against an external
Triton and Redis loads none of them, and a missing extra is named, not a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from control_plane.cli import jobs, manage, serve

app = typer.Typer(
    name="conch",
    help="Conch: serve trained models through NVIDIA Triton behind a FastAPI control plane.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
serve.register(app)
manage.register(app)
jobs.register(app)

# command -> (module with a `register(app)` function, what to install when it is missing)
_PLUGINS = {
    "export": ("exporters.cli", 'pip install "conch[all]" (or the extra of your framework)'),
    "demo": ("conch_embedded.demo.cli", 'pip install "conch[embedded]"'),
    "demo-models": ("conch_embedded.demo.cli", 'pip install "conch[embedded]"'),
    "bench": ("conch_bench.cli", 'pip install "conch[bench]"'),
}


_added: set[str] = set()  # modules already registered


def with_commands(*names: str) -> typer.Typer:
    """The app with the named plugin commands added (all of them when none is named)."""
    for name in names or tuple(_PLUGINS):
        module_name, install = _PLUGINS[name]
        if module_name not in _added:
            _added.add(module_name)
            _add_plugin(name, module_name, install)
    return app


def _add_plugin(name: str, module_name: str, install: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or str(exc)

        def unavailable() -> None:
            typer.echo(f"`conch {name}` needs {missing}: {install}", err=True)
            raise typer.Exit(2)

        app.command(
            name,
            help=f"(not installed: {install})",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(unavailable)
        return
    module.register(app)


def main() -> None:
    asked = sys.argv[1] if len(sys.argv) > 1 else ""
    if asked in _PLUGINS:
        with_commands(asked)
    elif not asked or asked.startswith("-"):  # `conch`, `conch --help`: list them all
        with_commands()
    app()
