"""The HTTP application: health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from taskservice.health import Health


def create_app(health: Health) -> FastAPI:
    """Build the application serving /health/live, /health/ready and /metrics."""
    app = FastAPI(title="Task Service", version="0.1.0")

    @app.get("/health/live")
    async def live() -> Response:
        stalled = health.stalled_roles()
        if stalled:
            return Response(f"stalled: {', '.join(stalled)}\n", status_code=503, media_type="text/plain")
        return Response("ok\n", media_type="text/plain")

    @app.get("/health/ready")
    async def ready() -> Response:
        if not health.ready:
            missing = [name for name, ok in (("database", health.database_ok), ("broker", health.broker_ok)) if not ok]
            return Response(f"unreachable: {', '.join(missing)}\n", status_code=503, media_type="text/plain")
        return Response("ok\n", media_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
