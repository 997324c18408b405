"""The HTTP rules every resource shares: errors as problem details, strict bodies and text
rules, keyset pages and cursors, ETags and conditional requests, idempotency keys, and the
request's database session.

May import `service.database` and `service.base`; never the ASGI layers (`service.edge`),
the resources or the app.
"""
