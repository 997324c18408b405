"""The ASGI layers in front of Litestar, outermost first: tracing, the request observer
(request id, metrics, the request log), the request limits and the token gate.

May import `service.http` (to answer a problem), `service.database` and `service.base`;
never the resources or the app.
"""
