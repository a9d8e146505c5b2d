"""A step's prompt: the admin's template with the run's document and the earlier steps' outputs put
in its placeholders.

Placeholders are ``{document}``, ``{outputs}`` (every earlier step's output, each headed by its
step's name and agent type, in stage and step order) and ``{<step name>}`` (one earlier step's
output). Only these names are replaced, each once, in one pass: a brace in the template that
names nothing (a JSON example, say) stays as written, and a document or an output that itself
contains ``{outputs}`` is never expanded again (what a patient's note says is data, not template).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_-]+)\}")
DOCUMENT, OUTPUTS = "document", "outputs"


@dataclass(frozen=True)
class Output:
    step: str
    agent_type: str
    text: str


def default_prompt(stage: int) -> str:
    return "{document}" if stage == 0 else "{document}\n\n{outputs}"


def outputs_text(outputs: Iterable[Output]) -> str:
    return "\n\n".join(f"## {o.step} ({o.agent_type})\n{o.text.strip()}" for o in outputs)


def render(template: str, stage: int, document: str, outputs: list[Output]) -> str:
    """The step's user message."""
    by_name = {o.step: o.text.strip() for o in outputs}
    values = {DOCUMENT: document, OUTPUTS: outputs_text(outputs), **by_name}

    def put(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name in values else match.group(0)

    return PLACEHOLDER.sub(put, template or default_prompt(stage))


def problems(steps: Iterable[tuple[str, int, str]]) -> list[str]:
    """What is wrong with a workflow's steps, given as ``(name, stage, prompt)``: names used twice,
    placeholders naming a step of the same or a later stage (its output does not exist yet), a
    placeholder that looks like a step name but names none. Empty when it can run."""
    steps = list(steps)
    found: list[str] = []
    stages = {name: stage for name, stage, _ in steps}
    names = [name for name, _, _ in steps]
    for name in sorted({n for n in names if names.count(n) > 1}):
        found.append(f"Step '{name}' is named twice.")
    if steps and min(stage for _, stage, _ in steps) != 0:
        found.append("The first stage is stage 0.")
    for name, stage, prompt in steps:
        for used in PLACEHOLDER.findall(prompt or ""):
            if used in (DOCUMENT, OUTPUTS):
                if used == OUTPUTS and stage == 0:
                    found.append(f"Step '{name}': {{outputs}} in stage 0, where no step has run before it.")
                continue
            if used not in stages:
                continue  # not a placeholder: left as written
            if stages[used] >= stage:
                found.append(
                    f"Step '{name}' (stage {stage}) uses {{{used}}}, a step of stage {stages[used]}: "
                    "only earlier stages' outputs exist when it runs."
                )
    return found
