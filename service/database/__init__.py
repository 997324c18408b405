"""Everything that talks to PostgreSQL: the pools (`pool`) and the one place that decides
which server runs a statement (`routing`), replicas' lag and consistency tokens
(`replication`), PostgreSQL URLs (`urls`), the SQL files (`sql`), the dynamic statements
(`statements`), the schema's migrations (`migrations`) and the embedded server
(`embedded`).

May import `service.base` only: nothing here knows about HTTP.
"""
