"""The outbox relay: publishes queued result messages to Kafka and marks them sent.

A batch is locked with SKIP LOCKED, published, and marked sent in one transaction, so
concurrent relays never publish the same row at the same time. A relay killed after the
broker acknowledged a batch but before the commit publishes that batch again on restart.
Delivery is therefore at least once. Every copy is byte-identical, with the task id as key
and the attempt in a header, so consumers can deduplicate.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from taskservice import metrics
from taskservice.aio import wait_first
from taskservice.config import Settings
from taskservice.errors import DatabaseUnavailableError
from taskservice.health import Health
from taskservice.store.db import Pool, PostgresError, translate_errors
from taskservice.store.repository import Repository

logger = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0


class OutboxRelay:
    """Moves outbox rows to Kafka until stopped."""

    def __init__(
        self, settings: Settings, pool: Pool, repository: Repository, producer: AIOKafkaProducer,
        health: Health, wake: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._repository = repository
        self._producer = producer
        self._health = health
        self._wake = wake

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until stopping is set; the batch in hand is finished first."""
        logger.info("outbox relay started", extra={"event": "relay_started"})
        while not stopping.is_set():
            self._wake.clear()
            try:
                published = await self.publish_batch()
            except (KafkaError, DatabaseUnavailableError, PostgresError) as exc:
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                if isinstance(exc, KafkaError):
                    metrics.BROKER_ERRORS.labels(operation="publish_outbox").inc()
                logger.warning("outbox publish failed, retrying in %.0f s: %s", RETRY_DELAY_S, exc,
                               extra={"event": "relay_retry"})
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self._health.mark_progress("relay")
            if published < self._settings.relay_batch_size:
                await wait_first(self._wake, stopping, timeout=self._settings.relay_poll_interval_s)
        logger.info("outbox relay stopped", extra={"event": "relay_stopped"})

    async def publish_batch(self) -> int:
        """Publish one batch of unsent messages; return how many were published."""
        async with translate_errors("publish_outbox"), self._pool.acquire() as connection:
            async with connection.transaction():
                rows = await self._repository.claim_outbox(connection, self._settings.relay_batch_size)
                if not rows:
                    return 0
                futures = []
                for row in rows:
                    futures.append(await self._producer.send(
                        row["topic"],
                        value=row["payload"].encode(),
                        key=row["message_key"].encode(),
                        headers=[("content-type", b"application/json"),
                                 ("attempt", str(row["attempt"] or 0).encode())],
                    ))
                await asyncio.gather(*futures)
                await self._repository.mark_outbox_sent(connection, [row["id"] for row in rows])
        debug = logger.isEnabledFor(logging.DEBUG)
        for row in rows:
            metrics.OUTBOX_PUBLISHED.labels(topic=row["topic"]).inc()
            if debug:
                logger.debug("outbox message published", extra={
                    "event": "outbox_published", "topic": row["topic"], "task_id": row["task_id"],
                    "attempt": row["attempt"], "outbox_id": row["id"]})
        return len(rows)
