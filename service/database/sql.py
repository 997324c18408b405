"""The SQL files: one statement a file under `sql/<resource>/`, read once at start-up."""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


def load_queries(resource: str) -> dict[str, str]:
    """Every statement in `sql/<resource>/`, by file name without `.sql`; read once."""
    return {path.stem: path.read_text() for path in sorted((SQL_DIR / resource).glob("*.sql"))}
