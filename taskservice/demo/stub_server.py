"""Stub of a third-party user-data API that the ``gdpr-user-cleanup`` example function calls.

``DELETE /users/{id}`` returns 204 the first time an id is deleted and 404
afterwards. Any other path returns 404, and any other method returns 405. The
server binds loopback addresses only, because it exists for local demos and
tests.

Run it on its own with ``python -m taskservice.demo.stub_server --port 8099``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import signal
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

USERS_PATH_PREFIX = "/users/"


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One request that the stub handled: its method, raw path and response status."""

    method: str
    path: str
    status: int


class _CallRecord:
    """Thread-safe store of handled requests and of the user ids deleted so far."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[RecordedCall] = []
        self._deleted_user_ids: list[str] = []

    def delete_user(self, user_id: str) -> bool:
        """Mark ``user_id`` deleted. Return False if it was already deleted."""
        with self._lock:
            if user_id in self._deleted_user_ids:
                return False
            self._deleted_user_ids.append(user_id)
            return True

    def add_call(self, call: RecordedCall) -> None:
        with self._lock:
            self._calls.append(call)

    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    def deleted_user_ids(self) -> list[str]:
        with self._lock:
            return list(self._deleted_user_ids)


class _StubRequestHandler(BaseHTTPRequestHandler):
    server_version = "StubCleanupServer/1.0"
    record: _CallRecord  # set on a per-server subclass in StubCleanupServer.start()

    def do_DELETE(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self._discard_request_body()
        path = urlsplit(self.path).path
        if not path.startswith(USERS_PATH_PREFIX):
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route for {path}"})
            return
        # Check the raw segment, so that an encoded slash (%2F) stays part of the id.
        segment = path[len(USERS_PATH_PREFIX) :]
        if not segment or "/" in segment:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no route for {path}"})
            return
        user_id = unquote(segment)
        if self.record.delete_user(user_id):
            logger.info("stub cleanup API deleted user %s", user_id)
            self._send_empty(HTTPStatus.NO_CONTENT)
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"user {user_id} not found"})

    def _reject_method(self) -> None:
        self._discard_request_body()
        self._send_json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"method {self.command} is not allowed, use DELETE"},
            extra_headers={"Allow": "DELETE"},
        )

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler dispatches to do_<METHOD> and responds with 501 when
        # that attribute is missing, so every method other than DELETE resolves
        # here and gets 405 instead.
        if name.startswith("do_"):
            return self._reject_method
        raise AttributeError(name)

    def _discard_request_body(self) -> None:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return
        try:
            length = int(length_header)
        except ValueError:
            return
        if length > 0:
            self.rfile.read(length)

    def _send_empty(self, status: HTTPStatus) -> None:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_json(
        self,
        status: HTTPStatus,
        body: dict[str, Any],
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps(body).encode("utf-8")
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _record(self, status: HTTPStatus) -> None:
        # Called before the response is written, so a client that has read the
        # response always finds its call in the record.
        self.record.add_call(RecordedCall(method=self.command, path=self.path, status=int(status)))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        logger.debug("stub cleanup API %s: " + format, self.address_string(), *args)


class _IPv6ThreadingHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _require_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"host {host!r} is not an IP address: pass a loopback address such as 127.0.0.1 or ::1"
        ) from None
    if not address.is_loopback:
        raise ValueError(f"host {host} is not a loopback address: the stub server binds only 127.0.0.0/8 or ::1")


class StubCleanupServer:
    """Stub third-party user-data API served from a background thread on a loopback address.

    Use as a context manager, or call ``start()`` and ``stop()``. Port 0, the
    default, lets the operating system choose a free port, and ``url`` returns
    the address that was bound.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        _require_loopback(host)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        self._host = host
        self._port = port
        self._record = _CallRecord()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> StubCleanupServer:
        """Bind the socket and start serving in a daemon thread. Return ``self``."""
        if self._server is not None:
            raise RuntimeError("StubCleanupServer is already started")

        handler = type("_BoundStubRequestHandler", (_StubRequestHandler,), {"record": self._record})
        server_class = _IPv6ThreadingHTTPServer if ":" in self._host else ThreadingHTTPServer
        server = server_class((self._host, self._port), handler)
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="stub-cleanup-server",
            daemon=True,
        )
        thread.start()
        self._server = server
        self._thread = thread
        logger.info("stub cleanup API listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Calling it again, or before ``start()``, does nothing."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        logger.info("stub cleanup API stopped")

    @property
    def url(self) -> str:
        """Base URL of the running server, without a trailing slash."""
        if self._server is None:
            raise RuntimeError("StubCleanupServer is not started: call start() first")
        host, port = self._server.server_address[:2]
        if ":" in host:
            return f"http://[{host}]:{port}"
        return f"http://{host}:{port}"

    @property
    def deleted_user_ids(self) -> list[str]:
        """User ids deleted so far, in request order, each listed once."""
        return self._record.deleted_user_ids()

    @property
    def calls(self) -> list[RecordedCall]:
        """Every request handled so far, recorded just before each response is sent."""
        return self._record.calls()

    def __enter__(self) -> StubCleanupServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the stub server in the foreground until SIGINT (Ctrl-C) or SIGTERM."""
    parser = argparse.ArgumentParser(description="Serve the stub third-party user-data API on a loopback address.")
    parser.add_argument("--host", default="127.0.0.1", help="loopback IP address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8099, help="TCP port to bind, 0 for any free port (default: 8099)")
    arguments = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = StubCleanupServer(arguments.host, arguments.port).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signal_number, frame: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
