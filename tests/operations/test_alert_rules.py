"""The alert rules load in promtool, pass their unit tests, and each alert has a firing and a quiet case."""

from __future__ import annotations

import subprocess

import yaml

from tests.operations.common import ALERT_RULES, ALERT_TESTS, DEPLOY, require_tool

REQUIRED_ALERTS = {
    "TaskserviceConsumerStalled", "TaskserviceQueueAgeGrowing", "TaskserviceFailureRateHigh",
    "TaskserviceOutboxBacklog", "TaskserviceSchedulerAbsent",
}


def _alerts() -> list[dict]:
    document = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_rules() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(ALERT_RULES)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_config_is_valid() -> None:
    promtool = require_tool("promtool")
    config = DEPLOY / "prometheus" / "prometheus.yml"
    result = subprocess.run([promtool, "check", "config", "--syntax-only", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_are_described() -> None:
    alerts = _alerts()
    names = {rule["alert"] for rule in alerts}
    assert REQUIRED_ALERTS <= names, f"missing alerts: {sorted(REQUIRED_ALERTS - names)}"
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"].get("summary"), f"{rule['alert']} has no summary"
        assert rule["annotations"].get("description"), f"{rule['alert']} has no description"


def test_each_alert_has_firing_and_quiet_cases() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in _alerts():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"no unit test where {rule['alert']} fires"
        assert any(not case["exp_alerts"] for case in mine), f"no unit test where {rule['alert']} stays quiet"
