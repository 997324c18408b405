"""Users: the people who write posts; their routes, msgspec structs and queries.

A resource: may import `service.http`, `service.database` and `service.base`.
"""
