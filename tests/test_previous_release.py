"""The previous-release check (`make migration-check`) can fail: a scratch step that drops a
column the running release reads breaks it, and the check says so."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from service.database import migrations


def test_a_step_that_drops_a_column_the_old_code_reads_fails_the_check(
    repo_root: Path, tmp_path: Path
):
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, folder)
    newest = max(migrations.migration_ids())
    (folder / "0999.drop-posts-published.sql").write_text(
        f"-- depends: {newest}\nALTER TABLE posts DROP COLUMN published;\n"
    )
    (folder / "0999.drop-posts-published.rollback.sql").write_text(
        "ALTER TABLE posts ADD COLUMN published boolean NOT NULL DEFAULT false;\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.previous_release", "--folder", str(folder), "--seconds", "2"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "applied: 0999.drop-posts-published" in result.stdout
    assert "previous release: " in result.stdout
    assert ": 500 " in result.stdout, result.stdout
    assert result.stdout.rstrip().endswith("migration check FAILED")
