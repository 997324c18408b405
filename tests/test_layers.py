"""The layer contract has teeth: `lint-imports` (run by `make lint`) passes on the tree and
fails on a scratch copy of it with one upward import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy in `root` comes first on the path, ahead of the installed `service`.
    environment = os.environ | {"PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy(repo_root: Path, target: Path) -> Path:
    shutil.copytree(
        repo_root / "service", target / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(repo_root / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_tree_keeps_its_layers(repo_root, tmp_path):
    result = _lint_imports(_copy(repo_root, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_lint(repo_root, tmp_path):
    root = _copy(repo_root, tmp_path)
    settings = root / "service" / "base" / "settings.py"
    # The ground importing the HTTP rules: two layers up.
    settings.write_text(settings.read_text() + "\nfrom service.http import errors  # noqa\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "service.base.settings -> service.http.errors" in result.stdout
