"""squawk (`make lint`) with the project's configuration catches the steps that stall a
busy table: an index built on `posts` without CONCURRENTLY fails, the same with it passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SQUAWK = Path(sys.executable).parent / "squawk"


def _squawk(repo_root: Path, folder: Path, sql: str) -> subprocess.CompletedProcess[str]:
    step = folder / "0099.scratch.sql"
    step.write_text(f"-- depends: 0002.create-posts\n{sql}\n")
    return subprocess.run(
        [str(SQUAWK), "--config", str(repo_root / ".squawk.toml"), "--reporter", "gcc", str(step)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_index_on_posts_without_concurrently_fails_the_lint(repo_root: Path, tmp_path: Path):
    result = _squawk(repo_root, tmp_path, "CREATE INDEX posts_title_idx ON posts (title);")
    assert result.returncode != 0
    assert "require-concurrent-index-creation" in result.stdout, result.stdout


def test_the_same_index_built_concurrently_passes(repo_root: Path, tmp_path: Path):
    result = _squawk(
        repo_root,
        tmp_path,
        "-- transactional: false\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS posts_title_idx ON posts (title);",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_the_shipped_steps_pass_with_their_named_exceptions(repo_root: Path):
    steps = sorted(str(path) for path in (repo_root / "migrations").glob("*.sql"))
    assert any(step.endswith(".rollback.sql") for step in steps)
    result = subprocess.run(
        [str(SQUAWK), "--config", str(repo_root / ".squawk.toml"), "--reporter", "gcc", *steps],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
