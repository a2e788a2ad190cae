"""Helpers of the operations tests: deployment files, PromQL expressions, tools and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from taskservice.config import Settings

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPOSITORY_ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "tests" / "alerts.test.yml"
AUTOSCALING = DEPLOY / "k8s" / "autoscaling.yaml"

# Grafana's built-in interval variables, replaced by a window that spans many 1 s scrapes.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>.+),\s*(?P<label>\w+)\)$")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def in_ci() -> bool:
    """Return whether the tests run under CI, where a missing tool fails instead of skipping."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """Return the path of a command; skip the test when it is missing, or fail under CI."""
    path = shutil.which(name)
    if path is None:
        message = (f"{name} is not installed; scripts/run_tests.py installs Debian's prometheus package "
                   "when run as root, or run: apt-get install prometheus")
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


# Expressions ---------------------------------------------------------------------------


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """Return (where, PromQL) for every panel target and query variable of a dashboard."""
    board = json.loads(path.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"{path.name}: {panel['title']} ({target['refId']})", target["expr"]))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            definition = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            queries.append((f"{path.name}: variable {variable['name']}", definition))
    return queries


def alert_expressions() -> list[tuple[str, str]]:
    """Return (alert name, expression) for every rule in the alert rules file."""
    document = yaml.safe_load(ALERT_RULES.read_text())
    return [(rule.get("alert") or rule["record"], rule["expr"])
            for group in document["groups"] for rule in group["rules"]]


def autoscaling_queries() -> list[tuple[str, str]]:
    """Return (ScaledObject, query) for the Prometheus triggers of the KEDA objects."""
    queries = []
    for document in yaml.safe_load_all(AUTOSCALING.read_text()):
        for trigger in document["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                queries.append((f"ScaledObject {document['metadata']['name']}", trigger["metadata"]["query"]))
    return queries


def grafana_to_promql(expression: str) -> str:
    """Replace Grafana variables with values Prometheus accepts; label_values() becomes a count by label."""
    match = _LABEL_VALUES.match(expression.strip())
    if match:
        return f"count by ({match['label']}) ({match['metric']})"
    for variable, value in GRAFANA_INTERVALS.items():
        expression = expression.replace(variable, value)
    return re.sub(r"\$\{?function\}?", ".*", expression)


def with_bool_comparisons(expression: str) -> str:
    """Add the bool modifier to every comparison outside label matchers and strings.

    An alert expression such as `x > 300` returns nothing while the alert is quiet. With
    `x > bool 300` it returns 0 or 1 for every series of x, so an empty result means that
    the series themselves are missing.
    """
    output: list[str] = []
    depth = 0
    quote = ""
    index = 0
    while index < len(expression):
        char = expression[index]
        if quote:
            output.append(char)
            if char == "\\":
                output.append(expression[index + 1])
                index += 1
            elif char == quote:
                quote = ""
            index += 1
            continue
        if char in "\"'`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        operator = next((op for op in _COMPARISONS if depth == 0 and expression.startswith(op, index)), None)
        if operator is None:
            output.append(char)
            index += 1
            continue
        output.append(operator)
        index += len(operator)
        if not re.match(r"\s*bool\b", expression[index:]):
            output.append(" bool")
    return "".join(output)


def metric_names(expression: str) -> set[str]:
    """Return the service metric families an expression reads (histogram suffixes removed)."""
    names = set(re.findall(r"\btaskservice_[a-z0-9_]+", expression))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


def exposed_families(exposition: str) -> set[str]:
    """Return the metric family names in a Prometheus text exposition, counters with _total."""
    families = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _hash, _type, name, kind = line.split(" ", 3)
            families.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return families


# HTTP -------------------------------------------------------------------------------------


def _get_blocking(url: str, timeout: float) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


async def http_get(port: int, path: str, *, timeout: float = 2.0) -> tuple[int | None, str]:
    """GET http://127.0.0.1:port/path; return (status, body), or (None, error) without a response."""
    return await asyncio.to_thread(_get_blocking, f"http://127.0.0.1:{port}{path}", timeout)


# Database outage --------------------------------------------------------------------------


def database_name(settings: Settings) -> str:
    """Return the name of the test's own database."""
    assert settings.database_url is not None
    return settings.database_url.rsplit("/", 1)[1].split("?", 1)[0]


@contextlib.asynccontextmanager
async def database_unreachable(admin_dsn: str, settings: Settings) -> AsyncIterator[None]:
    """Refuse connections to the test's database and end the service's sessions until the block exits.

    Only the test's own database is affected; the shared server keeps running.
    """
    database = database_name(settings)
    admin = await asyncpg.connect(admin_dsn)
    stop = asyncio.Event()

    async def terminate_sessions() -> None:
        while not stop.is_set():
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND application_name LIKE 'taskservice-%'", database)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)

    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        terminator = asyncio.create_task(terminate_sessions(), name="terminate-sessions")
        try:
            yield
        finally:
            stop.set()
            await terminator
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()


def yaml_documents(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the non-empty YAML documents of a file."""
    for document in yaml.safe_load_all(path.read_text()):
        if document:
            yield document
