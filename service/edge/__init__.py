"""What stands in front of Litestar, outermost first: tracing (when on), then the edge
layer (`layer.Edge`), which gives every request its id, applies the request limits and
the token gate, and records its metrics and log line (`observer`).

May import `service.http` (to answer a problem), `service.database` and `service.base`;
never the resources or the app.
"""
