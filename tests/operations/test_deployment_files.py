"""The deployment files validate against their schemas and agree with the service's settings.

No Docker engine or Kubernetes cluster is needed. compose.yaml is checked against the
Compose Specification schema that check-jsonschema vendors. The Kubernetes manifests are
checked against the OpenAPI schemas of kubernetes-validate in strict mode, and the KEDA
ScaledObjects against a vendored schema. The Dockerfile goes through BuildKit's parser
(the `dockerfile` package).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import jsonschema
import kubernetes_validate
import pytest
import yaml

from taskservice.config import Settings
from taskservice.service import ROLES
from tests.operations.common import AUTOSCALING, DEPLOY, REPOSITORY_ROOT, yaml_documents

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SCALED_OBJECT_SCHEMA = Path(__file__).parent / "schemas" / "keda-scaledobject.schema.json"
# Trigger metadata that KEDA 2.16 reads for the scalers used (keda.sh docs, "Scalers").
KEDA_TRIGGER_METADATA = {
    "kafka": {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
              "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
              "limitToPartitionsWithLag", "version", "partitionLimitation", "sasl", "tls"},
    "prometheus": {"serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
                   "ignoreNullValues", "unsafeSsl", "queryParameters"},
}


def _settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("TASKSERVICE_") or name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        assert name.startswith("TASKSERVICE_"), f"{name} is not a service setting"
        monkeypatch.setenv(name, str(value))
    return Settings()


# Compose ----------------------------------------------------------------------------------


def test_compose_matches_the_compose_spec() -> None:
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["worker"]["restart_policy"] = "always"
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, "the compose schema accepted an unknown service key"


def test_compose_runs_every_role_and_the_monitoring(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    roles = {service["command"][2]: name for name, service in services.items()
             if service.get("command", [])[:2] == ["run", "--role"]}
    assert set(roles) == set(ROLES) - {"sweeper"}, f"compose runs the roles {sorted(roles)}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", "Kafka must run in KRaft mode"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond the loopback address"

    prometheus_config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {target for config in prometheus_config["scrape_configs"] if config["job_name"] == "taskservice"
               for group in config["static_configs"] for target in group["targets"]}
    assert targets == {f"{service}:8080" for service in roles.values()}, f"Prometheus scrapes {sorted(targets)}"

    settings = _settings_from(services["http"]["environment"], monkeypatch)
    assert settings.http_port == 8080
    assert settings.http_host == "0.0.0.0"


def test_docker_compose_config_parses() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("the docker client has no compose plugin here; compose.yaml is checked against the "
                    "Compose Specification schema instead")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# Kubernetes -------------------------------------------------------------------------------


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, document) for path in sorted(K8S.glob("*.yaml")) for document in yaml_documents(path)]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _name, document in _manifests() if document["kind"] == kind]


def test_kubernetes_manifests_validate_strictly() -> None:
    checked = 0
    for name, document in _manifests():
        if document["kind"] in ("Kustomization", "ScaledObject"):
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {document['kind']} {document['metadata']['name']} is invalid "
                            f"for Kubernetes {version}: {exc.message}")
        checked += 1
    assert checked >= 10, f"only {checked} Kubernetes objects were validated"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_scaled_objects_validate() -> None:
    schema = json.loads(SCALED_OBJECT_SCHEMA.read_text())
    deployments = {document["metadata"]["name"] for document in _by_kind("Deployment")}
    scaled = list(yaml_documents(AUTOSCALING))
    assert {document["spec"]["scaleTargetRef"]["name"] for document in scaled} == \
        {"taskservice-ingest", "taskservice-worker"}
    for document in scaled:
        errors = [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(document)]
        assert not errors, f"ScaledObject {document['metadata']['name']}: {errors}"
        assert document["spec"]["scaleTargetRef"]["name"] in deployments
        for trigger in document["spec"]["triggers"]:
            unknown = set(trigger["metadata"]) - KEDA_TRIGGER_METADATA[trigger["type"]]
            assert not unknown, f"{trigger['type']} trigger of {document['metadata']['name']} has {sorted(unknown)}"


def test_deployments_run_each_role_with_probes() -> None:
    configmap = _by_kind("ConfigMap")[0]["data"]
    port = int(configmap["TASKSERVICE_HTTP_PORT"])
    deployments = {document["spec"]["template"]["spec"]["containers"][0]["args"][2]: document
                   for document in _by_kind("Deployment")}
    assert set(deployments) == set(ROLES) - {"sweeper"}, f"Deployments run {sorted(deployments)}"
    budgets = _by_kind("PodDisruptionBudget")
    for role, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"] == ["run", "--role", role]
        assert container["ports"][0]["containerPort"] == port
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live", role
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready", role
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live", role
        assert pod["securityContext"]["runAsNonRoot"] is True, role
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, role
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(key) == value for key, value in budget["spec"]["selector"]["matchLabels"].items())
                   for budget in budgets), f"no PodDisruptionBudget selects the {role} pods"
    worker_grace = deployments["worker"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert worker_grace > float(configmap["TASKSERVICE_SHUTDOWN_GRACE_S"]), \
        "workers need more termination grace than shutdown_grace_s to release their tasks"


def test_config_and_secrets_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = dict(_by_kind("ConfigMap")[0]["data"])
    for secret in _by_kind("Secret"):
        if secret["metadata"]["name"] == "taskservice-secrets":
            environment.update(secret["stringData"])
    settings = _settings_from(environment, monkeypatch)
    assert settings.database_url and settings.kafka_bootstrap_servers


# Dockerfile -------------------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").removeprefix("**/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negated
    return ignored


def test_dockerfile_is_multi_stage_and_unprivileged() -> None:
    commands = dockerfile.parse_file(str(REPOSITORY_ROOT / "Dockerfile"))
    stages = [index for index, command in enumerate(commands) if command.cmd == "FROM"]
    assert len(stages) >= 2, "the Dockerfile must build in one stage and run in another"
    final = commands[stages[-1]:]
    users = [command.value[0] for command in final if command.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"the final stage runs as {users}"
    entrypoint = [command for command in final if command.cmd == "ENTRYPOINT"]
    assert entrypoint and entrypoint[-1].value == ("taskservice",)
    healthcheck = " ".join(next(command for command in final if command.cmd == "HEALTHCHECK").value)
    assert "/health/live" in healthcheck
    assert [command.value for command in final if command.cmd == "EXPOSE"] == [("8080",)]


def test_dockerfile_copies_files_that_reach_the_build_context() -> None:
    patterns = [line.strip() for line in (REPOSITORY_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for command in dockerfile.parse_file(str(REPOSITORY_ROOT / "Dockerfile")):
        if command.cmd != "COPY" or any(flag.startswith("--from") for flag in command.flags):
            continue
        for source in command.value[:-1]:
            assert (REPOSITORY_ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for excluded in (".venv", ".state", ".git", "tests"):
        assert _ignored(excluded, patterns), f".dockerignore lets {excluded} into the build context"
