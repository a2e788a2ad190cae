# syntax=docker/dockerfile:1
# Task Service image: one image for every role, chosen by the command, e.g.
#   docker run taskservice:local run --role worker
# The build stage installs the package into a virtual environment; the runtime stage
# copies only that environment and the example functions, and runs as an unprivileged
# user. Function runtimes are subprocesses of the worker with their own address-space
# limit (RLIMIT_AS) and a private HOME and TMPDIR under /tmp, which needs no privilege.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir taskservice && touch taskservice/__init__.py \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall --yes taskservice
COPY taskservice ./taskservice
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 taskservice \
    && useradd --system --uid 10001 --gid taskservice --no-create-home \
       --home-dir /var/lib/taskservice --shell /usr/sbin/nologin taskservice \
    && mkdir -p /var/lib/taskservice/state \
    && chown -R 10001:10001 /var/lib/taskservice
COPY --from=build /opt/venv /opt/venv
COPY functions /app/functions
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TASKSERVICE_STATE_DIR=/var/lib/taskservice/state \
    TASKSERVICE_FUNCTIONS_DIR=/app/functions \
    TASKSERVICE_HTTP_HOST=0.0.0.0 \
    TASKSERVICE_HTTP_PORT=8080 \
    TASKSERVICE_LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/live', timeout=2)"]
ENTRYPOINT ["taskservice"]
CMD ["run", "--role", "ingest,worker,relay,scheduler"]
