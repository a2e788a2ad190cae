"""The Grafana dashboards are well-formed and provisioned; their queries run in test_prometheus_scrape."""

from __future__ import annotations

import json
import re

import yaml

from tests.operations.common import DASHBOARDS, DEPLOY, dashboard_queries

GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}


def test_dashboards_exist() -> None:
    uids = {json.loads(path.read_text())["uid"] for path in DASHBOARDS}
    assert {"taskservice-overview", "taskservice-function"} <= uids, f"dashboards found: {sorted(uids)}"


def test_dashboard_structure() -> None:
    uids = set()
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"] not in uids, f"{path.name}: uid {board['uid']} is used twice"
        uids.add(board["uid"])
        assert board["title"] and isinstance(board["schemaVersion"], int), path.name
        variables = {variable["name"]: variable for variable in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", f"{path.name}: no data source variable"
        assert variables["datasource"]["query"] == "prometheus", path.name

        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        _check_layout(path.name, board["panels"])
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            where = f"{path.name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"], f"{where} has no query"
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{where}: refIds repeat"
            assert panel.get("description"), f"{where} has no description"
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        for where, expression in dashboard_queries(path):
            used = set(re.findall(r"\$\{?(\w+)\}?", expression))
            unknown = used - set(variables) - GRAFANA_VARIABLES
            assert not unknown, f"{where} uses undefined variables {sorted(unknown)}"


def _check_layout(name: str, panels: list[dict]) -> None:
    boxes = []
    for panel in panels:
        grid = panel["gridPos"]
        where = f"{name}: {panel['title']} at {grid}"
        assert grid["w"] > 0, f"{where} has no width"
        assert grid["h"] > 0, f"{where} has no height"
        assert grid["x"] >= 0, f"{where} starts left of the grid"
        assert grid["x"] + grid["w"] <= 24, f"{where} ends right of the 24-column grid"
        box = (grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"])
        for other_title, other in boxes:
            overlap = box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]
            assert not overlap, f"{name}: {panel['title']} overlaps {other_title}"
        boxes.append((panel["title"], box))


def test_provisioning_matches_compose_mounts() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"]
                  if volume.startswith("./"))
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "taskservice.yaml").read_text())
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())

    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert provider["providers"][0]["options"]["path"] == mounts["./grafana/dashboards"]
    source = datasource["datasources"][0]
    assert source["type"] == "prometheus", source
    assert source["isDefault"], source
    assert source["url"] == "http://prometheus:9090", "the data source must point at the compose Prometheus"
    assert "prometheus" in compose["services"], "compose.yaml has no Prometheus service"
