"""Settings from environment variables and a TOML file, and their validation."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from taskservice.config import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TASKSERVICE_") or name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
            monkeypatch.delenv(name)


def test_defaults_need_no_configuration() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.kafka_bootstrap_servers is None
    assert settings.uses_embedded_servers
    assert settings.topics == {"exh-events": "exh", "document-changes": "cloudevents"}


def test_unprefixed_server_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    settings = Settings()
    assert settings.database_url == "postgresql://db/x"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert not settings.uses_embedded_servers


def test_toml_file_below_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "taskservice.toml"
    config.write_text('results_topic = "from-file"\ndead_letter_topic = "dlq-file"\n[topics]\nin = "exh"\n')
    monkeypatch.setenv("TASKSERVICE_DEAD_LETTER_TOPIC", "dlq-env")
    settings = load_settings(str(config))
    assert settings.results_topic == "from-file"
    assert settings.dead_letter_topic == "dlq-env"
    assert settings.topics == {"in": "exh"}


def test_missing_toml_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ValueError, match="absent.toml"):
        load_settings(str(missing))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"topics": {}}, "at least one topic"),
        ({"topics": {"t": "avro"}}, "topic 't' has the unknown format 'avro'; use one of exh, cloudevents, debezium"),
        ({"results_topic": "exh-events"}, "both ingested and written"),
        ({"worker_claim_batch_size": 0}, "worker_claim_batch_size"),
        ({"lease_s": 10, "heartbeat_interval_s": 20}, "heartbeat_interval_s"),
        ({"http_port": 70000}, "http_port"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"unknown_setting": 1}, "unknown_setting"),
    ],
)
def test_invalid_settings_name_the_field(overrides: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**overrides)
    assert fragment in str(caught.value)


def test_invalid_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKSERVICE_TOPIC_PARTITIONS", "many")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "topic_partitions" in str(caught.value)


def test_environment_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = Settings(database_url="postgresql://db/x", topics={"in": "exh"}, kafka_enable_idempotence=False,
                        lease_s=30, state_dir=tmp_path)
    for name, value in original.to_environment().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original
