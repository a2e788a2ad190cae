"""Identifiers in the 24-character lowercase hexadecimal ObjectId form."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time

OBJECT_ID_PATTERN = re.compile(r"^[0-9a-f]{24}$")

_process_random = os.urandom(5)
_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_counter_lock = threading.Lock()
_pid = os.getpid()


def new_object_id() -> str:
    """Generate an ObjectId: 4 bytes of seconds, 5 random bytes per process, a 3-byte counter."""
    global _process_random, _pid
    if os.getpid() != _pid:
        # A forked child must not repeat its parent's random part.
        _pid = os.getpid()
        _process_random = os.urandom(5)
    with _counter_lock:
        count = next(_counter) & 0xFFFFFF
    seconds = int(time.time()) & 0xFFFFFFFF
    return (seconds.to_bytes(4, "big") + _process_random + count.to_bytes(3, "big")).hex()


def is_object_id(value: object) -> bool:
    """Return whether value is a 24-character lowercase hexadecimal string."""
    return isinstance(value, str) and OBJECT_ID_PATTERN.match(value) is not None
