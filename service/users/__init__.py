"""Users: the people who write posts."""
