"""The PromQL in deploy/: every expression of the Grafana dashboard and of the
Prometheus rules, read from the files themselves (a new panel or rule is checked
without touching the tests), as Prometheus' query API can evaluate them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from conch_manifest.locations import PROJECT_ROOT

DASHBOARD = PROJECT_ROOT / "deploy/grafana/conch-dashboard.json"
RULES = PROJECT_ROOT / "deploy/prometheus/rules.yml"
CONFIG = PROJECT_ROOT / "deploy/prometheus/prometheus.yml"

# Grafana's built-ins the panels use, as Grafana would fill them in for a 1 s scrape.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


@dataclass(frozen=True)
class Expression:
    where: str  # "panel 'Replicas' A", "alert ConchTritonUnreachable", ...
    promql: str


@dataclass(frozen=True)
class Variable:
    name: str
    metric: str  # label_values(<metric>, <label>)
    label: str


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def variables(board: Mapping[str, Any]) -> list[Variable]:
    """The dashboard's query variables (all `label_values(metric, label)`)."""
    found = []
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
        assert match, f"variable {variable['name']}: not label_values(metric, label): {text}"
        found.append(Variable(variable["name"], match[1], match[2]))
    return found


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def panel_expressions(board: Mapping[str, Any], values: Mapping[str, str]) -> list[Expression]:
    """Every panel's every query, its `$variables` replaced by `values` (regex-escaped
    for the `=~` matchers they stand in) and Grafana's built-ins."""
    found = []
    for panel in _panels(board["panels"]):
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], values)
            found.append(Expression(f"panel {panel['title']!r} {target['refId']}", expr))
    return found


def substitute(expr: str, values: Mapping[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name in BUILTINS:
            return BUILTINS[name]
        assert name in values, f"no value for ${name} in {expr}"
        # As Grafana escapes a value for a regex matcher, then for a PromQL string.
        return re.escape(values[name]).replace("\\", "\\\\")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", fill, expr)


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def rule_expressions() -> list[Expression]:
    """A recording rule's expression; an alert's measured quantities: each operand of
    its top-level `and`/`or`/`unless`, with the threshold comparison removed."""
    found = []
    for rule in rules():
        if "record" in rule:
            found.append(Expression(f"record {rule['record']}", rule["expr"]))
            continue
        for operand in _top_level_split(rule["expr"], _SET_OPERATOR):
            found.append(Expression(f"alert {rule['alert']}", measured(operand)))
    return found


_SET_OPERATOR = re.compile(r"\s(and|or|unless)\s")
_COMPARISON = re.compile(r"==|!=|>=|<=|>|<")


def _top_level(expr: str) -> list[bool]:
    """For each character: outside every (), [], {} and string."""
    flags, depth, quote = [], 0, ""
    for char in expr:
        if quote:
            flags.append(False)
            quote = "" if char == quote else quote
            continue
        if char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        flags.append(depth == 0 and not quote and char not in ")]}")
    return flags


def _top_level_split(expr: str, operator: re.Pattern[str]) -> list[str]:
    top = _top_level(expr)
    parts, start = [], 0
    for match in operator.finditer(expr):
        if all(top[match.start() : match.end()]):
            parts.append(expr[start : match.start()])
            start = match.end()
    return [part.strip() for part in [*parts, expr[start:]]]


def measured(expr: str) -> str:
    """`quantity > threshold` -> `quantity` (the last top-level comparison)."""
    top = _top_level(expr)
    cuts = [m.start() for m in _COMPARISON.finditer(expr) if all(top[m.start() : m.end()])]
    assert cuts, f"an alert without a threshold comparison: {expr}"
    return expr[: cuts[-1]].strip()
