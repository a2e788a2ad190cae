"""Small asyncio helpers shared by the service's loops."""

from __future__ import annotations

import asyncio


async def wait_first(*events: asyncio.Event, timeout: float) -> None:
    """Return when any of events is set or after timeout seconds, whichever comes first."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
