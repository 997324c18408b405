"""The posts service. Its packages, by layer, each importing only the ones below it
(checked by import-linter, `make lint`):

- `service.app`, `service.openapi`, `service.__main__`: the composition (app factory, the
  OpenAPI document, the command line);
- `service.users`, `service.posts`, `service.operations`: the resources and the
  operator's routes;
- `service.edge`: what stands in front of Litestar (the edge layer, tracing);
- `service.http`: the HTTP rules every resource shares;
- `service.database`: everything that talks to PostgreSQL;
- `service.base`: settings, metric and log definitions, small helpers.
"""
