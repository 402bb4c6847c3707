# syntax=docker/dockerfile:1
# Chorus: the API server (`chorus serve`) and the projector (`chorus project`) from one image.
# PostgreSQL and Redis are not in it: DATABASE_URL (required here: the image has no PostgreSQL
# binaries for the embedded default) and REDIS_URL come from the environment (compose.yaml).

# -- build: the project and its runtime dependencies into a virtualenv -----------------------
FROM docker.io/library/python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/chorus
WORKDIR /src
# Only what the package is built from (tests, bench and docs stay out: .dockerignore).
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY application ./application
COPY infrastructure ./infrastructure
COPY projections ./projections
COPY api ./api
# A plain (non-editable) install of the pinned runtime dependencies, without the dev extras.
RUN /opt/chorus/bin/pip install --no-cache-dir .

# -- run: the virtualenv only, as an unprivileged user -------------------------------------
FROM docker.io/library/python:3.11-slim-bookworm AS run
RUN groupadd --system --gid 10001 chorus \
    && useradd --system --uid 10001 --gid chorus --home-dir /var/lib/chorus --create-home chorus
COPY --from=build /opt/chorus /opt/chorus
ENV PATH=/opt/chorus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    CHORUS_DATA_DIR=/var/lib/chorus \
    CHORUS_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/chorus
EXPOSE 8000
# Liveness only (/health): readiness (/ready, database and read models) is the proxy's or the
# orchestrator's question. The slim image has no curl; Python's urllib does the request.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health\", timeout=2)"]
# Inside its own network namespace the server must listen beyond loopback: --public says so
# (chorus serve refuses a non-loopback address without it). The port is PORT.
ENTRYPOINT ["chorus"]
CMD ["serve", "--host", "0.0.0.0", "--public"]
