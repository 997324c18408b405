"""The instruments' tests use the suite's real PostgreSQL: the same fixtures, imported."""

from tests.conftest import database_url, make_database, server_url

__all__ = ["database_url", "make_database", "server_url"]
