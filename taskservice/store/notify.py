"""LISTEN on a dedicated connection, reconnecting after it breaks.

Notifications only wake loops early. Each loop also polls, so a lost connection or a
missed notification delays work by at most one poll interval and loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from taskservice.errors import DatabaseUnavailableError
from taskservice.store.db import Connection, connect

logger = logging.getLogger(__name__)

RECONNECT_DELAY_S = 1.0


class Notifier:
    """Sets an asyncio.Event per channel whenever PostgreSQL sends a notification on it."""

    def __init__(self, dsn: str, channels: Iterable[str]) -> None:
        self._dsn = dsn
        self.events: dict[str, asyncio.Event] = {channel: asyncio.Event() for channel in channels}
        self._connection: Connection | None = None
        self._broken = asyncio.Event()
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call callback with the payload of every notification on channel."""
        self._subscribers.setdefault(channel, []).append(callback)

    def event(self, channel: str) -> asyncio.Event:
        """Return the event set on notifications of channel."""
        return self.events[channel]

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep a listening connection open until stopping is set."""
        while not stopping.is_set():
            try:
                await self._listen()
            except DatabaseUnavailableError as exc:
                logger.warning("cannot listen for notifications, retrying: %s", exc,
                               extra={"event": "listen_retry"})
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            stop_task = asyncio.create_task(stopping.wait(), name="notifier-stop")
            broken_task = asyncio.create_task(self._broken.wait(), name="notifier-broken")
            await asyncio.wait({stop_task, broken_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            broken_task.cancel()
            await self._close()
        await self._close()

    async def _listen(self) -> None:
        self._broken.clear()
        connection = await connect(self._dsn, role="listen")
        connection.add_termination_listener(lambda _connection: self._broken.set())
        for channel in self.events:
            await connection.add_listener(channel, self._on_notification)
        self._connection = connection
        # Work may have arrived while no connection listened.
        for event in self.events.values():
            event.set()

    def _on_notification(self, _connection: object, _pid: int, channel: str, payload: str) -> None:
        event = self.events.get(channel)
        if event is not None:
            event.set()
        for callback in self._subscribers.get(channel, []):
            try:
                callback(payload)
            except Exception:  # noqa: BLE001 - one subscriber must not stop the others
                logger.exception("notification callback failed", extra={"event": "notify_callback_failed",
                                                                        "channel": channel})

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), timeout=2)
            except (OSError, asyncio.TimeoutError):
                connection.terminate()
