"""The SQL files: one statement a file under `sql/<resource>/`, read once at start-up."""

from __future__ import annotations

from pathlib import Path


def project_folder(name: str) -> Path:
    """`sql` or `migrations`: inside the package when it is installed normally (a wheel
    puts them at `service/sql/` and `service/migrations/`, see pyproject.toml's
    package-dir), else beside it, as in a checkout and its editable install."""
    package = Path(__file__).resolve().parents[1]
    inside = package / name
    return inside if inside.is_dir() else package.parent / name


SQL_DIR = project_folder("sql")


def load_queries(resource: str) -> dict[str, str]:
    """Every statement in `sql/<resource>/`, by file name without `.sql`; read once."""
    return {path.stem: path.read_text() for path in sorted((SQL_DIR / resource).glob("*.sql"))}
