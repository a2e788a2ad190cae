"""The HTTP server as the service runs it: a real socket on loopback, keep-alive connections."""

from __future__ import annotations

import asyncio
import http.client
import socket
import statistics
import time

from taskservice.config import Settings
from tests.support import running_service


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _median_request_s(port: int, path: str, count: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        samples.append(time.perf_counter() - started)
    connection.close()
    return statistics.median(samples)


async def test_keep_alive_responses_not_delayed(settings: Settings) -> None:
    port = _free_port()
    served = settings.model_copy(update={"http_host": "127.0.0.1", "http_port": port})
    async with running_service(served, ("http",)):
        for _ in range(100):
            try:
                await asyncio.to_thread(_median_request_s, port, "/health/live", 1)
                break
            except OSError:
                await asyncio.sleep(0.1)
        median_s = await asyncio.to_thread(_median_request_s, port, "/health/live", 30)
    # Nagle's algorithm against the client's delayed ACK costs about 40 ms per response.
    assert median_s < 0.02, f"median keep-alive request took {median_s * 1000:.1f} ms"
