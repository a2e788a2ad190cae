"""Service settings from environment variables and an optional TOML file.

Every setting is read from `TASKSERVICE_<NAME>` (for example `TASKSERVICE_RESULTS_TOPIC`).
`DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS` are accepted without the prefix too.
A TOML file named by `TASKSERVICE_CONFIG` (or `--config` on the command line) supplies
values that environment variables do not set. With neither a database URL nor a Kafka
bootstrap setting, `dev` and `demo` start embedded servers under `state_dir`.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

TopicFormat = Literal["exh", "cloudevents", "debezium"]
TOPIC_FORMATS: tuple[str, ...] = get_args(TopicFormat)

CONFIG_FILE_VARIABLE = "TASKSERVICE_CONFIG"

# Settings that bound how long a role's loop sleeps between two progress marks.
_LOOP_WAITS = ("worker_poll_interval_s", "relay_poll_interval_s", "sweep_interval_s", "scheduler_tick_s")

# A file given on the command line; it takes the place of TASKSERVICE_CONFIG.
_config_file: ContextVar[str | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    """All settings of every role, with their units in the names."""

    model_config = SettingsConfigDict(
        env_prefix="TASKSERVICE_",
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TASKSERVICE_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="PostgreSQL DSN. Unset: dev and demo start an embedded server.",
    )
    database_pool_size: int = Field(default=10, ge=2, le=200, description="Connections per process pool.")
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TASKSERVICE_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"
        ),
        description="Comma-separated host:port list. Unset: dev and demo start an embedded broker.",
    )
    kafka_enable_idempotence: bool = Field(
        default=True,
        description="Idempotent producer; turn off for brokers without InitProducerId v3 (Tansu).",
    )
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, description="Consumer group session timeout.")
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="Consumer heartbeat interval.")
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=0, description="Maximum wait of a fetch that finds no data.")
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000, description="Producer request timeout.")

    topics: dict[str, TopicFormat] = Field(
        default={"exh-events": "exh", "document-changes": "cloudevents"},
        description="Ingested topics and the record format of each: exh, cloudevents or debezium.",
    )
    topic_partitions: int = Field(default=4, ge=1, description="Partitions of topics the service creates.")
    consumer_group: str = Field(default="taskservice-ingest", min_length=1, description="Ingest consumer group id.")
    results_topic: str = Field(default="task-results", min_length=1, description="Topic of task results.")
    dead_letter_topic: str = Field(default="dead-letter", min_length=1, description="Topic of rejected records.")

    ingest_batch_max_records: int = Field(default=2000, ge=1, le=50_000, description="Records per ingest batch.")
    max_record_bytes: int = Field(default=1_048_576, ge=1_024, description="Largest accepted record value.")
    max_task_data_bytes: int = Field(default=256_000, ge=1_024, description="Largest task data as JSON (250 KB).")
    dispatcher_refresh_interval_s: float = Field(
        default=5.0, gt=0, description="Reload of dispatchers when no change notification arrives."
    )

    worker_claim_batch_size: int = Field(default=500, ge=1, le=10_000, description="Tasks claimed per query.")
    worker_max_in_flight: int = Field(default=1_000, ge=1, description="Tasks one worker process runs at once.")
    worker_poll_interval_s: float = Field(default=1.0, gt=0, description="Claim poll when no notification arrives.")
    max_running_tasks: int | None = Field(
        default=None, ge=1,
        description="Tasks running at once across all workers; unset for no limit (ExtraHorizon uses 5).",
    )
    shutdown_grace_s: float = Field(default=30.0, ge=0, description="Wait for running tasks on shutdown.")
    cancel_grace_s: float = Field(default=5.0, ge=0, description="Wait after interrupting a cancelled task.")
    task_failed_topic: str | None = Field(
        default=None,
        description="Topic of task_failed events; unset: the first exh topic, empty: none.",
    )
    runtime_processes_per_function: int = Field(default=2, ge=1, le=64, description="Warm runtimes per function.")
    runtime_idle_timeout_s: float = Field(default=300.0, gt=0, description="Idle runtime processes stop after this.")
    lease_s: float = Field(default=60.0, ge=5, description="Lease of a running task beyond its time limit.")
    heartbeat_interval_s: float = Field(default=10.0, gt=0, description="Lease renewal period.")
    sweep_interval_s: float = Field(default=10.0, gt=0, description="Period of the expired-lease sweep.")
    max_result_bytes: int = Field(default=6 * 1024 * 1024, ge=1_024, description="Largest function result.")
    max_log_bytes: int = Field(default=256 * 1024, ge=1_024, description="Log bytes kept per task run.")

    relay_batch_size: int = Field(default=500, ge=1, le=10_000, description="Outbox rows published per batch.")
    relay_poll_interval_s: float = Field(default=1.0, gt=0, description="Outbox poll when no notification arrives.")

    scheduler_tick_s: float = Field(
        default=5.0, gt=0, le=300,
        description="Maximum scheduler sleep; it wakes earlier at the next fire time or on a schedule change.",
    )
    scheduler_batch_size: int = Field(default=100, ge=1, le=10_000, description="Due schedules fired per transaction.")
    scheduler_misfire_grace_s: float = Field(
        default=60.0, ge=0, description="Age up to which a late fire time still runs under the skip catch-up policy."
    )

    functions_dir: Path = Field(default=Path("functions"), description="Folder of project functions to register.")
    state_dir: Path = Field(default=Path(".state"), description="Folder of embedded servers and deployed code.")
    http_host: str = Field(default="127.0.0.1", description="Address of the HTTP server (health, metrics).")
    http_port: int = Field(default=8080, ge=0, le=65_535, description="Port of the HTTP server; 0 disables it.")
    http_max_body_bytes: int = Field(
        default=15 * 1024 * 1024, ge=1_024,
        description="Largest HTTP request body; a 10 MB function zip is about 13.4 MB as base64.",
    )
    admin_email: str = Field(
        default="admin@example.com", min_length=3, description="Email of the administrator created when no user exists."
    )
    admin_password: str | None = Field(
        default=None,
        description="Password of that administrator. Unset: dev uses a development default; run creates no user.",
    )
    oauth2_client_id: str = Field(
        default="taskservice", min_length=1, description="Public OAuth2 client created with that administrator."
    )
    access_token_lifetime_s: float = Field(default=3_600.0, ge=1, description="Lifetime of an access token.")
    refresh_token_lifetime_s: float = Field(
        default=30 * 86_400.0, ge=60, description="Lifetime of a refresh token."
    )
    direct_execution_max_concurrency: int = Field(
        default=10, ge=1, le=1_000, description="Direct executions running at once per HTTP process."
    )
    api_function_max_concurrency: int = Field(
        default=10, ge=1, le=1_000, description="API-function calls running at once per HTTP process."
    )
    sync_execution_max_time_limit_s: int = Field(
        default=30, ge=3, le=300, description="Largest timeLimit of a function run by execute or as API function."
    )
    api_function_max_payload_bytes: int = Field(
        default=6 * 1024 * 1024, ge=1_024, description="Largest API-function request and response."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="json, text, or auto (text on a terminal, else json)."
    )
    health_stall_timeout_s: float = Field(
        default=300.0, gt=0,
        description="Liveness fails when a role's loop has not advanced for this long while the database "
                    "and broker are reachable.",
    )
    metrics_sample_interval_s: float = Field(
        default=15.0, gt=0,
        description="Period of the due-task and outbox-backlog sample taken by the sweeper and scheduler roles.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read init arguments first, then environment variables, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get() or os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise ValueError(
                    f"settings file {config_file!r} (from --config or {CONFIG_FILE_VARIABLE}) does not exist; "
                    "give the path of a TOML settings file"
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("topics", mode="before")
    @classmethod
    def _check_topic_formats(cls, topics: Any) -> Any:
        if isinstance(topics, dict):
            for name, topic_format in topics.items():
                if topic_format not in TOPIC_FORMATS:
                    raise ValueError(
                        f"topic {name!r} has the unknown format {topic_format!r}; use one of {', '.join(TOPIC_FORMATS)}"
                    )
        return topics

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, topics: dict[str, TopicFormat]) -> dict[str, TopicFormat]:
        if not topics:
            raise ValueError("topics must name at least one topic, e.g. {\"exh-events\": \"exh\"}")
        for name in topics:
            if not name or len(name) > 249:
                raise ValueError(f"topic name {name!r} must have 1 to 249 characters")
        return topics

    @model_validator(mode="after")
    def _check_topic_roles(self) -> Settings:
        for special in (self.results_topic, self.dead_letter_topic):
            if special in self.topics:
                raise ValueError(
                    f"topic {special!r} is both ingested and written by the service; "
                    "remove it from topics or rename results_topic / dead_letter_topic"
                )
        if self.task_failed_topic and self.task_failed_topic == self.results_topic:
            raise ValueError(
                f"task_failed_topic and results_topic are both {self.results_topic!r}; "
                "task_failed events need their own topic"
            )
        if self.heartbeat_interval_s >= self.lease_s:
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be below lease_s ({self.lease_s})"
            )
        # A loop that sleeps its full wait and then works must not look stalled.
        wait_name = max(_LOOP_WAITS, key=lambda name: getattr(self, name))
        longest_wait_s = getattr(self, wait_name)
        if self.health_stall_timeout_s <= 2 * longest_wait_s:
            raise ValueError(
                f"health_stall_timeout_s ({self.health_stall_timeout_s}) must be more than twice {wait_name} "
                f"({longest_wait_s}), the longest wait of a role's loop; raise health_stall_timeout_s"
            )
        return self

    def to_environment(self) -> dict[str, str]:
        """Return the `TASKSERVICE_*` variables that reproduce these settings in a child process."""
        variables: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, (dict, list)):
                text = json.dumps(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            variables[f"TASKSERVICE_{name.upper()}"] = text
        return variables

    @property
    def task_failed_events_topic(self) -> str:
        """The topic task_failed events go to, or "" when they are turned off."""
        if self.task_failed_topic is not None:
            return self.task_failed_topic
        return next((topic for topic, fmt in self.topics.items() if fmt == "exh"), "")

    @property
    def uses_embedded_servers(self) -> bool:
        """Whether neither a database nor a broker was configured."""
        return self.database_url is None and self.kafka_bootstrap_servers is None


def load_settings(config_file: str | None = None, **overrides: object) -> Settings:
    """Load settings; config_file, when given, takes the place of TASKSERVICE_CONFIG."""
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    finally:
        _config_file.reset(token)
