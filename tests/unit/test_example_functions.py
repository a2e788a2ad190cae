"""Tests for the example functions under functions/ and for the stub cleanup API server."""

from __future__ import annotations

import ast
import http.client
import importlib
import json
import logging
import re
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from taskservice.demo.dataset import build_document_events, build_user_deleted_events, load_measurements
from taskservice.demo.stub_server import RecordedCall, StubCleanupServer

FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"
FUNCTION_NAMES = ("analyze-measurement", "daily-report", "gdpr-user-cleanup")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9-]+$")
START = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def load_handler(function_name: str) -> ModuleType:
    """Import ``handler.py`` of one function with its folder first on sys.path, as module ``handler``."""
    folder = str(FUNCTIONS_DIR / function_name)
    saved_module = sys.modules.pop("handler", None)
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("handler")
    finally:
        sys.path.remove(folder)
        sys.modules.pop("handler", None)
        if saved_module is not None:
            sys.modules["handler"] = saved_module


def make_context(function_name: str) -> SimpleNamespace:
    return SimpleNamespace(task_id="task-1", function_name=function_name, logger=logging.getLogger(f"test.{function_name}"))


@pytest.fixture(scope="module")
def analyze() -> ModuleType:
    return load_handler("analyze-measurement")


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load_handler("daily-report")


@pytest.fixture(scope="module")
def cleanup() -> ModuleType:
    return load_handler("gdpr-user-cleanup")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib sends requests through a proxy named in these variables, so clear
    # them to keep every test request on loopback.
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stub_server() -> Iterator[StubCleanupServer]:
    with StubCleanupServer() as server:
        yield server


# function.toml -------------------------------------------------------------


@pytest.mark.parametrize("function_name", FUNCTION_NAMES)
def test_function_toml_is_valid(function_name: str) -> None:
    folder = FUNCTIONS_DIR / function_name
    config = tomllib.loads((folder / "function.toml").read_text(encoding="utf-8"))

    assert config["name"] == function_name
    assert NAME_PATTERN.match(config["name"])
    assert isinstance(config["description"], str) and config["description"]
    assert config["runtime"] == "python3.11"
    assert isinstance(config["timeLimit"], int) and config["timeLimit"] > 0
    assert isinstance(config["memoryLimit"], int) and config["memoryLimit"] >= 128
    assert set(config) <= {
        "name",
        "description",
        "entryPoint",
        "runtime",
        "timeLimit",
        "memoryLimit",
        "environmentVariables",
        "retryPolicy",
    }
    for key, value in config.get("environmentVariables", {}).items():
        assert re.match(r"^[A-Z_][A-Z0-9_]*$", key), key
        assert isinstance(value, str), key
    if "retryPolicy" in config:
        assert isinstance(config["retryPolicy"]["enabled"], bool)
        assert all(isinstance(name, str) for name in config["retryPolicy"]["errorsToRetry"])

    module_name, _, attribute = config["entryPoint"].rpartition(".")
    assert (folder / f"{module_name}.py").is_file()
    assert callable(getattr(load_handler(function_name), attribute))


@pytest.mark.parametrize("function_name", FUNCTION_NAMES)
def test_handler_imports_only_stdlib(function_name: str) -> None:
    tree = ast.parse((FUNCTIONS_DIR / function_name / "handler.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])

    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_retry_errors_exist_in_cleanup_handler(cleanup: ModuleType) -> None:
    config = tomllib.loads((FUNCTIONS_DIR / "gdpr-user-cleanup" / "function.toml").read_text(encoding="utf-8"))

    for name in config["retryPolicy"]["errorsToRetry"]:
        assert issubclass(getattr(cleanup, name), Exception), name


# analyze-measurement -------------------------------------------------------


@pytest.mark.parametrize(
    ("systolic", "diastolic", "category"),
    [
        (119, 79, "normal"),
        (120, 79, "elevated"),
        (129, 79, "elevated"),
        (119, 80, "hypertension_stage_1"),
        (130, 70, "hypertension_stage_1"),
        (139, 89, "hypertension_stage_1"),
        (140, 70, "hypertension_stage_2"),
        (125, 90, "hypertension_stage_2"),
        (180, 120, "hypertension_stage_2"),
        (181, 100, "hypertensive_crisis"),
        (170, 121, "hypertensive_crisis"),
        (129.5, 79.9, "elevated"),
    ],
)
def test_analyze_categories_at_boundaries(analyze: ModuleType, systolic: float, diastolic: float, category: str) -> None:
    task = {"data": {"measurement": {"systolic": systolic, "diastolic": diastolic}}}

    result = analyze.handle(task, make_context("analyze-measurement"))

    assert result["category"] == category


def test_analyze_document_event(analyze: ModuleType) -> None:
    measurement = load_measurements(limit=1)[0]
    event = build_document_events([measurement], start=START)[0]

    result = analyze.handle({"data": {"event": event}}, make_context("analyze-measurement"))

    assert result == {
        "documentId": event["data"]["documentId"],
        "userId": event["data"]["userId"],
        "category": "normal",
        "systolic": 112,
        "diastolic": 74,
        "alerts": [],
    }


def test_analyze_direct_measurement_carries_ids(analyze: ModuleType) -> None:
    task = {"data": {"documentId": "d" * 24, "userId": "u" * 24, "measurement": {"systolic": 150, "diastolic": 95}}}

    result = analyze.handle(task, make_context("analyze-measurement"))

    assert result["documentId"] == "d" * 24
    assert result["userId"] == "u" * 24
    assert result["category"] == "hypertension_stage_2"
    assert [alert["code"] for alert in result["alerts"]] == ["hypertension_stage_2"]


def test_analyze_direct_measurement_without_ids(analyze: ModuleType) -> None:
    result = analyze.handle({"data": {"measurement": {"systolic": 110, "diastolic": 70}}}, make_context("analyze-measurement"))

    assert result["documentId"] is None
    assert result["userId"] is None


@pytest.mark.parametrize(
    ("measurement", "codes"),
    [
        ({"systolic": 190, "diastolic": 110}, ["hypertensive_crisis"]),
        ({"systolic": 85, "diastolic": 55}, ["low_blood_pressure"]),
        ({"systolic": 115, "diastolic": 75, "pulse": 120}, ["high_pulse"]),
        ({"systolic": 115, "diastolic": 75, "pulse": 44}, ["low_pulse"]),
        ({"systolic": 115, "diastolic": 75, "age": 15}, ["not_adult"]),
        ({"systolic": 200, "diastolic": 125, "pulse": 110}, ["hypertensive_crisis", "high_pulse"]),
    ],
)
def test_analyze_alerts(analyze: ModuleType, measurement: dict[str, Any], codes: list[str]) -> None:
    result = analyze.handle({"data": {"measurement": measurement}}, make_context("analyze-measurement"))

    assert [alert["code"] for alert in result["alerts"]] == codes
    assert all(alert["message"] for alert in result["alerts"])


@pytest.mark.parametrize(
    ("task_data", "message"),
    [
        ({"measurement": {"diastolic": 80}}, r"task\.data\.measurement\.systolic is missing"),
        ({"measurement": {"systolic": 120}}, r"task\.data\.measurement\.diastolic is missing"),
        ({"measurement": {"systolic": "120", "diastolic": 80}}, r"task\.data\.measurement\.systolic must be a number"),
        ({"measurement": {"systolic": True, "diastolic": 80}}, r"task\.data\.measurement\.systolic must be a number"),
        ({"measurement": {"systolic": 120, "diastolic": float("nan")}}, r"task\.data\.measurement\.diastolic must be a finite"),
        ({"measurement": {"systolic": 400, "diastolic": 80}}, r"task\.data\.measurement\.systolic 400 mm Hg is outside"),
        ({"measurement": {"systolic": 120, "diastolic": 5}}, r"task\.data\.measurement\.diastolic 5 mm Hg is outside"),
        ({"measurement": {"systolic": 100, "diastolic": 100}}, r"diastolic 100 mm Hg must be lower than"),
        ({"measurement": {"systolic": 120, "diastolic": 80, "pulse": 400}}, r"task\.data\.measurement\.pulse 400"),
        ({"measurement": {"systolic": 120, "diastolic": 80, "pulse": "fast"}}, r"task\.data\.measurement\.pulse must be a number"),
        ({"measurement": [120, 80]}, r"task\.data\.measurement must be a JSON object"),
        ({}, r"task\.data\.event \(or task\.data\.measurement\) is missing"),
        ({"event": {"type": "document.created"}}, r"task\.data\.event\.data is missing"),
        ({"event": {"data": {"documentId": "x"}}}, r"task\.data\.event\.data\.data is missing"),
        (
            {"event": {"data": {"data": {"systolic": None, "diastolic": 80}}}},
            r"task\.data\.event\.data\.data\.systolic is missing",
        ),
    ],
)
def test_analyze_rejects_invalid_input(analyze: ModuleType, task_data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze.handle({"data": task_data}, make_context("analyze-measurement"))


def test_analyze_rejects_missing_task_data(analyze: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"task\.data is missing"):
        analyze.handle({}, make_context("analyze-measurement"))


def test_analyze_accepts_every_dataset_event(analyze: ModuleType) -> None:
    events = build_document_events(load_measurements(), start=START)
    categories: set[str] = set()

    for event in events:
        result = analyze.handle({"data": {"event": event}}, make_context("analyze-measurement"))
        json.dumps(result)
        categories.add(result["category"])

    assert categories == {"normal", "elevated", "hypertension_stage_1", "hypertension_stage_2", "hypertensive_crisis"}


def test_analyze_logs_classification(analyze: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test.analyze-measurement"):
        analyze.handle({"data": {"measurement": {"systolic": 135, "diastolic": 85}}}, make_context("analyze-measurement"))

    assert "classified as hypertension_stage_1" in caplog.text


# daily-report --------------------------------------------------------------


def test_report_empty_day(report: ModuleType) -> None:
    result = report.handle({"data": {"date": "2024-03-01", "measurements": []}}, make_context("daily-report"))

    assert result == {
        "date": "2024-03-01",
        "count": 0,
        "categories": {
            "normal": 0,
            "elevated": 0,
            "hypertension_stage_1": 0,
            "hypertension_stage_2": 0,
            "hypertensive_crisis": 0,
        },
        "systolic": {"mean": None, "min": None, "max": None},
        "diastolic": {"mean": None, "min": None, "max": None},
    }


def test_report_aggregates_measurements(report: ModuleType) -> None:
    measurements = [
        {"systolic": 110, "diastolic": 70, "category": "normal"},
        {"systolic": 125, "diastolic": 75},
        {"systolic": 150, "diastolic": 95},
        {"systolic": 133, "diastolic": 82, "category": "hypertension_stage_1"},
    ]

    result = report.handle({"data": {"date": "2024-03-01", "measurements": measurements}}, make_context("daily-report"))

    assert result["count"] == 4
    assert result["categories"] == {
        "normal": 1,
        "elevated": 1,
        "hypertension_stage_1": 1,
        "hypertension_stage_2": 1,
        "hypertensive_crisis": 0,
    }
    assert result["systolic"] == {"mean": 129.5, "min": 110, "max": 150}
    assert result["diastolic"] == {"mean": 80.5, "min": 70, "max": 95}


def test_report_trusts_given_category(report: ModuleType) -> None:
    # A category from analyze-measurement is counted as given, not recomputed.
    measurements = [{"systolic": 110, "diastolic": 70, "category": "elevated"}]

    result = report.handle({"data": {"date": "2024-03-01", "measurements": measurements}}, make_context("daily-report"))

    assert result["categories"]["elevated"] == 1
    assert result["categories"]["normal"] == 0


def test_report_of_analyze_results(analyze: ModuleType, report: ModuleType) -> None:
    events = build_document_events(load_measurements(limit=200), start=START)
    results = [analyze.handle({"data": {"event": event}}, make_context("analyze-measurement")) for event in events]

    result = report.handle({"data": {"date": "2024-03-01", "measurements": results}}, make_context("daily-report"))

    assert result["count"] == 200
    assert sum(result["categories"].values()) == 200
    assert result["systolic"]["min"] <= result["systolic"]["mean"] <= result["systolic"]["max"]
    assert result["diastolic"]["min"] <= result["diastolic"]["mean"] <= result["diastolic"]["max"]


@pytest.mark.parametrize(
    ("task_data", "message"),
    [
        ({"measurements": []}, r"task\.data\.date is missing"),
        ({"date": "01/03/2024", "measurements": []}, r"task\.data\.date must be a YYYY-MM-DD date"),
        ({"date": 20240301, "measurements": []}, r"task\.data\.date must be a YYYY-MM-DD string"),
        ({"date": "2024-03-01"}, r"task\.data\.measurements is missing"),
        ({"date": "2024-03-01", "measurements": {"systolic": 120}}, r"task\.data\.measurements must be a list"),
        ({"date": "2024-03-01", "measurements": [42]}, r"task\.data\.measurements\[0\] must be a JSON object"),
        (
            {"date": "2024-03-01", "measurements": [{"systolic": 120, "diastolic": 80}, {"diastolic": 80}]},
            r"task\.data\.measurements\[1\]\.systolic is missing",
        ),
        (
            {"date": "2024-03-01", "measurements": [{"systolic": 120, "diastolic": "80"}]},
            r"task\.data\.measurements\[0\]\.diastolic must be a finite number",
        ),
        (
            {"date": "2024-03-01", "measurements": [{"systolic": 120, "diastolic": 80, "category": "high"}]},
            r"task\.data\.measurements\[0\]\.category must be one of",
        ),
    ],
)
def test_report_rejects_invalid_input(report: ModuleType, task_data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        report.handle({"data": task_data}, make_context("daily-report"))


def test_report_and_analyze_classify_alike(analyze: ModuleType, report: ModuleType) -> None:
    # The two functions deploy separately and each contains a copy of the thresholds.
    pairs = [(m.systolic, m.diastolic) for m in load_measurements()]
    pairs += [(systolic, diastolic) for systolic in range(60, 260, 3) for diastolic in range(30, 140, 3)]

    for systolic, diastolic in pairs:
        assert analyze.classify(systolic, diastolic) == report.classify(systolic, diastolic), (systolic, diastolic)


# gdpr-user-cleanup ---------------------------------------------------------


def user_deleted_task(user_id: Any) -> dict[str, Any]:
    return {"data": {"event": {"id": "e" * 24, "type": "user_deleted", "content": {"id": user_id}, "creation_timestamp": 0}}}


def test_cleanup_deletes_then_reports_already_deleted(
    cleanup: ModuleType, stub_server: StubCleanupServer, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    monkeypatch.setenv("CLEANUP_API_URL", stub_server.url)
    event = build_user_deleted_events(load_measurements(limit=1), count=1, start=START)[0]
    task = {"data": {"event": event}}
    user_id = event["content"]["id"]

    first = cleanup.handle(task, make_context("gdpr-user-cleanup"))
    second = cleanup.handle(task, make_context("gdpr-user-cleanup"))

    assert first == {"userId": user_id, "deleted": True, "status": 204}
    assert second == {"userId": user_id, "deleted": True, "status": 404}
    assert stub_server.deleted_user_ids == [user_id]
    assert stub_server.calls == [
        RecordedCall(method="DELETE", path=f"/users/{user_id}", status=204),
        RecordedCall(method="DELETE", path=f"/users/{user_id}", status=404),
    ]


def test_cleanup_quotes_user_id_in_path(
    cleanup: ModuleType, stub_server: StubCleanupServer, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    monkeypatch.setenv("CLEANUP_API_URL", stub_server.url + "/")

    result = cleanup.handle(user_deleted_task("a/b c"), make_context("gdpr-user-cleanup"))

    assert result["status"] == 204
    assert stub_server.calls[0].path == "/users/a%2Fb%20c"


def test_cleanup_uses_url_from_function_toml(cleanup: ModuleType) -> None:
    config = tomllib.loads((FUNCTIONS_DIR / "gdpr-user-cleanup" / "function.toml").read_text(encoding="utf-8"))
    environment = config["environmentVariables"]

    assert environment["CLEANUP_API_URL"] == "http://127.0.0.1:8099"
    assert cleanup.read_settings(environment) == ("http://127.0.0.1:8099", 10.0)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({}, "CLEANUP_API_URL is not set"),
        ({"CLEANUP_API_URL": "ftp://127.0.0.1"}, "must be an http or https URL"),
        ({"CLEANUP_API_URL": "http://127.0.0.1:1", "CLEANUP_API_TIMEOUT_SECONDS": "soon"}, "must be a number of seconds"),
        ({"CLEANUP_API_URL": "http://127.0.0.1:1", "CLEANUP_API_TIMEOUT_SECONDS": "0"}, "must be greater than 0"),
    ],
)
def test_cleanup_rejects_bad_settings(cleanup: ModuleType, environment: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cleanup.read_settings(environment)


def test_cleanup_requires_api_url(cleanup: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLEANUP_API_URL", raising=False)

    with pytest.raises(ValueError, match="CLEANUP_API_URL is not set"):
        cleanup.handle(user_deleted_task("u1"), make_context("gdpr-user-cleanup"))


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({}, r"task\.data is missing"),
        ({"data": {}}, r"task\.data\.event is missing"),
        ({"data": {"event": {"type": "user_created", "content": {"id": "u1"}}}}, r"task\.data\.event\.type must be 'user_deleted'"),
        ({"data": {"event": {"type": "user_deleted"}}}, r"task\.data\.event\.content is missing"),
        (user_deleted_task(""), r"task\.data\.event\.content\.id must be a non-empty string"),
        (user_deleted_task(42), r"task\.data\.event\.content\.id must be a non-empty string"),
    ],
)
def test_cleanup_rejects_invalid_event(cleanup: ModuleType, task: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cleanup.handle(task, make_context("gdpr-user-cleanup"))


class _FixedStatusServer:
    """Loopback HTTP server that responds to every DELETE with one status after an optional delay."""

    def __init__(self, status: int, delay_seconds: float = 0.0) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_DELETE(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
                time.sleep(outer.delay_seconds)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.status = status
        self.delay_seconds = delay_seconds
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> _FixedStatusServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize(
    ("status", "error_name"),
    [
        (500, "CleanupApiUnavailableError"),
        (503, "CleanupApiUnavailableError"),
        (400, "CleanupApiError"),
        (403, "CleanupApiError"),
    ],
)
def test_cleanup_raises_on_error_status(
    cleanup: ModuleType, monkeypatch: pytest.MonkeyPatch, no_proxy: None, status: int, error_name: str
) -> None:
    with _FixedStatusServer(status) as server:
        monkeypatch.setenv("CLEANUP_API_URL", server.url)

        with pytest.raises(getattr(cleanup, error_name), match=f"failed with HTTP status {status}"):
            cleanup.handle(user_deleted_task("u1"), make_context("gdpr-user-cleanup"))


def test_cleanup_times_out(cleanup: ModuleType, monkeypatch: pytest.MonkeyPatch, no_proxy: None) -> None:
    with _FixedStatusServer(204, delay_seconds=1.0) as server:
        monkeypatch.setenv("CLEANUP_API_URL", server.url)
        monkeypatch.setenv("CLEANUP_API_TIMEOUT_SECONDS", "0.2")

        started = time.monotonic()
        with pytest.raises(cleanup.CleanupApiUnavailableError, match="timed out"):
            cleanup.handle(user_deleted_task("u1"), make_context("gdpr-user-cleanup"))

        assert time.monotonic() - started < 1.0


def test_cleanup_connection_refused(cleanup: ModuleType, monkeypatch: pytest.MonkeyPatch, no_proxy: None) -> None:
    # Bind and close a socket to find a loopback port with no listener.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CLEANUP_API_URL", f"http://127.0.0.1:{port}")

    with pytest.raises(cleanup.CleanupApiUnavailableError, match=f"DELETE http://127.0.0.1:{port}/users/u1 failed"):
        cleanup.handle(user_deleted_task("u1"), make_context("gdpr-user-cleanup"))


# StubCleanupServer ---------------------------------------------------------


def send_request(server: StubCleanupServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_stub_delete_is_204_then_404(stub_server: StubCleanupServer) -> None:
    assert send_request(stub_server, "DELETE", "/users/abc")[0] == 204
    assert send_request(stub_server, "DELETE", "/users/abc")[0] == 404
    assert send_request(stub_server, "DELETE", "/users/def")[0] == 204

    assert stub_server.deleted_user_ids == ["abc", "def"]
    assert [call.status for call in stub_server.calls] == [204, 404, 204]


@pytest.mark.parametrize("path", ["/", "/users", "/users/", "/users/a/b", "/accounts/abc"])
def test_stub_other_paths_are_404(stub_server: StubCleanupServer, path: str) -> None:
    status, headers, body = send_request(stub_server, "DELETE", path)

    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert "error" in json.loads(body)
    assert stub_server.deleted_user_ids == []


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "OPTIONS", "PURGE"])
def test_stub_other_methods_are_405(stub_server: StubCleanupServer, method: str) -> None:
    status, headers, _ = send_request(stub_server, method, "/users/abc")

    assert status == 405
    assert headers["Allow"] == "DELETE"
    assert stub_server.calls == [RecordedCall(method=method, path="/users/abc", status=405)]
    assert stub_server.deleted_user_ids == []


def test_stub_head_is_405_without_body(stub_server: StubCleanupServer) -> None:
    status, _, body = send_request(stub_server, "HEAD", "/users/abc")

    assert status == 405
    assert body == b""


def test_stub_concurrent_deletes_succeed_once(stub_server: StubCleanupServer) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def delete() -> None:
        status = send_request(stub_server, "DELETE", "/users/same")[0]
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=delete) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(statuses) == [204] + [404] * 19
    assert stub_server.deleted_user_ids == ["same"]
    assert len(stub_server.calls) == 20


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "localhost", "example.invalid"])
def test_stub_rejects_non_loopback_host(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        StubCleanupServer(host=host)


def test_stub_binds_other_loopback_address() -> None:
    with StubCleanupServer(host="127.0.0.2") as server:
        assert server.url.startswith("http://127.0.0.2:")
        assert send_request(server, "DELETE", "/users/x")[0] == 204


def test_stub_binds_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("Python was built without IPv6 support")
    try:
        server = StubCleanupServer(host="::1").start()
    except OSError as error:
        pytest.skip(f"IPv6 loopback is not available here: {error}")
    try:
        assert re.match(r"^http://\[::1\]:\d+$", server.url)
        assert send_request(server, "DELETE", "/users/x")[0] == 204
    finally:
        server.stop()


def test_stub_lifecycle_errors() -> None:
    server = StubCleanupServer()
    with pytest.raises(RuntimeError, match="not started"):
        server.url
    server.stop()  # stopping a server that never started does nothing

    server.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
        assert re.match(r"^http://127\.0\.0\.1:\d+$", server.url)
    finally:
        server.stop()
    server.stop()

    with pytest.raises(RuntimeError, match="not started"):
        server.url


def test_stub_rejects_invalid_port() -> None:
    with pytest.raises(ValueError, match="port"):
        StubCleanupServer(port=70000)
