"""Posts: what users write; they belong to their author and go with them. Their routes,
msgspec structs and queries.

A resource above `service.users` (a user's page of posts asks whether the user exists):
may import it, `service.http`, `service.database` and `service.base`.
"""
