"""Everything that talks to PostgreSQL: the pools and which server runs a statement
(`pool`), the SQL files (`sql`), the dynamic statements (`statements`), the schema's
migrations (`migrations`) and the embedded server (`embedded`)."""
