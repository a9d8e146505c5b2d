"""The metric names a PromQL expression (or a Grafana dashboard, or a rules file) reads.

Not a PromQL parser: it drops what is not a metric name (string literals, label matchers, range
and offset durations, ``by``/``without``/``on``/``ignoring``/``group_*`` label lists, numbers,
keywords) and keeps the identifiers that are not followed by ``(`` (function calls) — enough for
the expressions of deploy/, and held to that by tests/test_observability_config.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS |= {"inf", "nan", "Inf", "NaN", "atan2"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)")


def metric_names(expr: str) -> set[str]:
    """The metrics ``expr`` selects."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside matchers
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def rule_expressions(path: Path) -> dict[str, str]:
    """Each alert (or recording rule) of a rules file: its name → its expression."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule.get("alert") or rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out += _panels(p.get("panels") or [])
    return out


def dashboard_expressions(path: Path) -> dict[str, str]:
    """Each PromQL expression of a Grafana dashboard (panels' targets and the template variables'
    ``label_values`` queries): where it is → the expression."""
    board = json.loads(path.read_text())
    found = {}
    for p in _panels(board.get("panels") or []):
        for t in p.get("targets") or []:
            if t.get("expr"):
                found[f"panel {p['title']!r} {t['refId']}"] = t["expr"]
    for v in board.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = _LABEL_VALUES.search(query)
            found[f"variable ${v['name']}"] = m.group(1) if m else query
    return found
