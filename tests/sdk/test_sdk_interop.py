"""Runs the official ExtraHorizon JavaScript SDK (npm, version pinned in package.json) against the service.

The service runs in this process with every role and authentication on; the HTTP API
listens on a free loopback port. interop.test.cjs drives it through the SDK with Node's
built-in test runner. Node modules are installed with `npm ci` when missing; without
Node.js or npm the test is skipped, and under CI (CI=true) it fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import orjson
import pytest

from taskservice.auth.bootstrap import bootstrap_admin
from taskservice.config import Settings
from taskservice.store.auth_repository import AuthRepository
from taskservice.store.db import create_pool
from tests.api.helpers import zip_code
from tests.support import publish, running_service

SDK_DIR = Path(__file__).resolve().parent
NODE_TIMEOUT_S = 300
ADMIN_PASSWORD = "interop-admin-password"

HANDLER = '''
import os

def handle(task, context):
    context.logger.info("echo for %s", task["id"])
    return {"data": task["data"], "greeting": os.environ.get("GREETING")}
'''

API = '''
def handle(request, context):
    method = request["requestContext"]["http"]["method"]
    context.logger.info("api %s %s", method, request["rawPath"])
    if request["rawPath"] == "/invalid":
        return {"statusCode": 999}
    return {"statusCode": 200, "body": {"method": method, "rawPath": request["rawPath"],
            "rawQueryString": request["rawQueryString"], "body": request["body"],
            "user": request["headers"].get("x-exh-requesting-user-id")}}
'''

FAIL = '''
def handle(task, context):
    raise KeyError("missing")
'''


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"SDK interop suite cannot run under CI: {reason}")
    pytest.skip(reason)


def ensure_node_modules() -> str:
    """Return the node executable, installing the SDK with `npm ci` when node_modules is missing."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed; install Node.js 20 or newer")
    installed = SDK_DIR / "node_modules" / "@extrahorizon" / "javascript-sdk" / "package.json"
    if not installed.is_file():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("npm is not installed, and tests/sdk/node_modules is missing")
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SDK_DIR, capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            pytest.fail(f"npm ci in {SDK_DIR} failed:\n{result.stdout}\n{result.stderr}")
    return node  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _event_server(settings: Settings) -> asyncio.Server:
    """Serve POST / on loopback: publish the JSON body to the first exh topic, respond 204."""
    topic = next(name for name, kind in settings.topics.items() if kind == "exh")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        event = orjson.loads(await reader.readexactly(length))
        await publish(settings, topic, [event])
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_sdk_interop_suite(settings: Settings, tmp_path: Path) -> None:
    node = ensure_node_modules()
    port = _free_port()
    settings = settings.model_copy(update={"http_host": "127.0.0.1", "http_port": port,
                                           "admin_password": ADMIN_PASSWORD})

    pool = await create_pool(settings.database_url or "", size=2, role="interop-setup")
    try:
        await bootstrap_admin(AuthRepository(pool), settings, dev_mode=False)
    finally:
        await pool.close()

    zip_file = tmp_path / "function.zip.b64"
    zip_file.write_text(zip_code({"handler.py": HANDLER, "api.py": API, "fail.py": FAIL}))
    events = await _event_server(settings)
    event_port = events.sockets[0].getsockname()[1]
    environment = {**os.environ, "EXH_HOST": f"http://localhost:{port}", "EXH_CLIENT_ID": settings.oauth2_client_id,
                   "EXH_USERNAME": settings.admin_email, "EXH_PASSWORD": ADMIN_PASSWORD,
                   "EVENT_URL": f"http://127.0.0.1:{event_port}/", "FUNCTION_ZIP": str(zip_file)}
    roles = ("ingest", "worker", "relay", "scheduler", "http")

    try:
        async with running_service(settings, roles):
            await _wait_for_port(port)
            process = await asyncio.create_subprocess_exec(
                node, "--dns-result-order=ipv4first", "--test", "--test-reporter=spec", "interop.test.cjs",
                cwd=SDK_DIR, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            try:
                output, _ = await asyncio.wait_for(process.communicate(), timeout=NODE_TIMEOUT_S)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
                pytest.fail(f"the SDK suite did not finish within {NODE_TIMEOUT_S} s")
    finally:
        events.close()
        await events.wait_closed()

    text = output.decode(errors="replace")
    print(text)
    assert process.returncode == 0, f"SDK interop suite failed:\n{text}"
    assert re.search(r"^\S+ fail 0$", text, re.MULTILINE), text
    assert re.search(r"^\S+ pass [1-9]", text, re.MULTILINE), text


async def _wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    pytest.fail(f"the HTTP server did not listen on 127.0.0.1:{port}")
