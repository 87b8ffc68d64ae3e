"""Run Python as if only `pip install conch` (no extras) were installed.

Usage: python production_only.py -m module [args] | -c code

Every installed distribution outside the closure of `[project] dependencies`
becomes unimportable, and so do Conch's packages that the serving code must not
need (the exporters, the embedded stack, the benchmark).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import runpy
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SERVING_PACKAGES = {"control_plane", "conch_manifest", "conch"}
OUR_OTHER_PACKAGES = {"exporters", "conch_embedded", "conch_bench"}


def production_distributions() -> set[str]:
    """The installed distributions `pip install conch` pulls in, extras followed."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    wanted = [Requirement(line) for line in project["dependencies"]]
    seen: set[tuple[str, str]] = set()  # (distribution, extra): one may come with several
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        extras = {"", *requirement.extras} - {extra for n, extra in seen if n == name}
        if not extras:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: nothing to refuse either
        seen.update((name, extra) for extra in extras)
        for line in distribution.requires or []:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                wanted.append(child)
    return {name for name, _ in seen}


def refused_modules() -> set[str]:
    allowed = production_distributions()
    refused = set(OUR_OTHER_PACKAGES)
    for module, distributions in importlib.metadata.packages_distributions().items():
        if module in SERVING_PACKAGES:
            continue
        if not any(canonicalize_name(d) in allowed for d in distributions):
            refused.add(module)
    return refused


class Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, refused: set[str]) -> None:
        self.refused = refused

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top = name.partition(".")[0]
        if top in self.refused:
            raise ModuleNotFoundError(f"{top} is not in the production dependency set", name=top)
        return None


def main(argv: list[str]) -> None:
    sys.meta_path.insert(0, Refuse(refused_modules()))
    mode, target, *rest = argv
    if mode == "-c":
        exec(compile(target, "<production_only>", "exec"), {"__name__": "__main__"})
        return
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
