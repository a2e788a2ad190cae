"""Kafka clients built from settings; aiokafka is the only Kafka library the service uses."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from taskservice.config import Settings
from taskservice.errors import BrokerUnavailableError

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


def _require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise BrokerUnavailableError(
            "kafka_bootstrap_servers is not set; set KAFKA_BOOTSTRAP_SERVERS or run `taskservice dev`, "
            "which starts an embedded broker"
        )
    return settings.kafka_bootstrap_servers


def create_producer(settings: Settings, *, linger_ms: int = 2) -> AIOKafkaProducer:
    """Build a producer that waits for every in-sync replica (acks=all)."""
    return AIOKafkaProducer(
        bootstrap_servers=_require_bootstrap(settings),
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=linger_ms,
        max_batch_size=1_048_576,
        max_request_size=max(settings.max_record_bytes * 2, 1_048_576),
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )


def create_consumer(
    settings: Settings,
    topics: Iterable[str],
    *,
    group_id: str | None,
    listener: ConsumerRebalanceListener | None = None,
) -> AIOKafkaConsumer:
    """Build a consumer with manual offset commits, reading new groups from the earliest offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=_require_bootstrap(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=max(settings.max_record_bytes * 2, 1_048_576),
        fetch_max_bytes=max(settings.max_record_bytes * 4, 52_428_800),
        isolation_level="read_committed",
    )
    topic_list = list(topics)
    if topic_list:
        consumer.subscribe(topic_list, listener=listener)
    return consumer


async def ensure_topics(settings: Settings, names: Iterable[str]) -> None:
    """Create the topics that do not exist yet, with settings.topic_partitions partitions."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=_require_bootstrap(settings), request_timeout_ms=settings.kafka_request_timeout_ms
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if not missing:
            return
        response = await admin.create_topics(
            [NewTopic(name, settings.topic_partitions, 1) for name in missing]
        )
        for topic, code, message in getattr(response, "topic_errors", []):
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise BrokerUnavailableError(f"cannot create topic {topic!r}: error {code} {message}")
        logger.info("created topics %s", ", ".join(missing), extra={"event": "topics_created", "topics": missing})
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot reach the Kafka broker to create topics: {exc}") from exc
    finally:
        await admin.close()
