"""The app layers of DESIGN.md hold: the import-linter contracts in pyproject.toml are kept, and they
catch an import hidden inside a function (a loop dodged that way is still a loop)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the packages of this tree, not another on the path
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" KEPT") == 3, result.stdout


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code)


def test_imports_hidden_in_functions_break_the_contracts(tmp_path: Path) -> None:
    for name in ("apps", "medai"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # A lower layer reaching up, a loop between two modules of an app, an app reaching into medai:
    # each from inside a function, where an import costs nothing until it runs.
    _append(tmp_path / "apps/audit/services.py", "def _up():\n    from apps.inference import models  # noqa\n")
    _append(tmp_path / "apps/gpu/shared.py", "def _loop():\n    from apps.gpu import slots  # noqa\n")
    _append(tmp_path / "apps/accounts/services.py", "def _wiring():\n    from medai import env  # noqa\n")

    result = lint_imports(tmp_path)

    out = result.stdout
    assert result.returncode != 0, out
    assert "Contracts: 0 kept, 3 broken." in out, out
    assert "apps.audit.services -> apps.inference.models" in out
    assert "No cycles are allowed in apps.gpu." in out  # shared <-> slots
    assert "apps.accounts.services -> medai.env" in out
