# syntax=docker/dockerfile:1
# A normal install of the project in a venv, served as `make run` serves it, in a slim
# two-stage image. `make image-check` builds and runs it (docs/operations.md, The container).
# Build:   docker build -t posts-service .
# Run:     docker run -p 8000:8000 -e DATABASE_URL=postgresql://user:pass@db:5432/app \
#              -e API_TOKENS_FILE=/run/secrets/tokens -e CURSOR_SECRET=... posts-service
# Migrate: docker run --rm -e DATABASE_URL=... posts-service python -m service migrate

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service/ service/
COPY sql/ sql/
COPY migrations/ migrations/
# A normal install, not an editable one: the package, its SQL files and its migrations
# (service/sql/, service/migrations/, see pyproject.toml) all land in the venv, which is
# the only thing the runtime stage takes.
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 service \
    && mkdir -p /data && chown service:service /data
COPY --from=build /opt/venv /opt/venv
# Nothing is read from the working directory; / is not writable by the service's user.
WORKDIR /
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data
# Embedded PostgreSQL data (when no DATABASE_URL is given) and the cursor key live here.
VOLUME ["/data"]
USER service
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/live\", timeout=2)"]
CMD ["python", "-m", "service", "serve"]
