"""Operations endpoints of every process: liveness, readiness and Prometheus metrics.

Every role serves them on http_port when it is above 0, and the http role serves them
beside the API. With PROMETHEUS_MULTIPROC_DIR set before the process starts, /metrics
reports what every process writing to that folder recorded (prometheus_client's
multiprocess mode), so that several processes of one pod can share one endpoint.
"""

from __future__ import annotations

import os
import socket

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from taskservice.health import Health

MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_exposition() -> bytes:
    """Render the metrics in the Prometheus text format, across processes in multiprocess mode."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY_VARIABLE)
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


def operations_router(health: Health) -> APIRouter:
    """Build the router of /health/live, /health/ready and /metrics for one process's health state."""
    router = APIRouter(tags=["health"])

    # The route functions have no docstrings: FastAPI would put them into the OpenAPI
    # document, which docs/openapi.json keeps.
    @router.get("/health/live")
    async def live() -> Response:
        stalled = health.stalled_roles()
        if stalled:
            return Response(f"stalled: {', '.join(stalled)}\n", status_code=503, media_type="text/plain")
        return Response("ok\n", media_type="text/plain")

    @router.get("/health/ready")
    async def ready() -> Response:
        if not health.ready:
            missing = [name for name, ok in (("database", health.database_ok), ("broker", health.broker_ok)) if not ok]
            return Response(f"unreachable: {', '.join(missing)}\n", status_code=503, media_type="text/plain")
        return Response("ok\n", media_type="text/plain")

    @router.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics_exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def bind_socket(host: str, port: int) -> socket.socket:
    """Open a listening TCP socket for the HTTP server; raise OSError when the address is in use or invalid."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY from the listening socket on Linux. Without
    # it, uvicorn serving a socket passed in (uvicorn 0.55) leaves Nagle's algorithm on, and
    # each response on a keep-alive connection waits about 40 ms for the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        # Listening at once makes a second process's bind of the same port fail here.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def create_operations_app(health: Health) -> FastAPI:
    """Build the application of a process without the http role: the operations endpoints only."""
    app = FastAPI(title="Task Service operations", openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(operations_router(health))
    return app
