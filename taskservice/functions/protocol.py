"""Wire format shared by the runtime pool and its worker processes.

Both directions use frames: a 4-byte big-endian payload length followed by an
orjson document. The pool writes to the worker's command pipe:

* ``{"kind": "init", ...}`` once, right after the process starts;
* ``{"kind": "batch", "tasks": [...]}`` for each batch, as a single write.

The worker sends on its result pipe control messages (JSON objects)
``{"kind": "ready"}`` or ``{"kind": "init_error", "error": {...}, "logs": [...]}``
and with one task item (a JSON array) per finished task::

    [index, ok, result, error, logs, started, finished]

where ``index`` counts from 0 within the batch, ``logs`` is a list of
``[unix_time, line]`` and ``started``/``finished`` are Unix times.

Task items are first appended to the outbox, a shared memory region that the
pool maps as well, and the worker copies the outbox to the result pipe at most
every flush interval and at the end of each batch. When the worker dies, the
pool reads the items that had not been copied yet from the outbox, so results
of finished tasks survive a crash of a later task. The outbox starts with an
8-byte little-endian count of pending bytes, followed by the pending frames.

The same shared memory contains two arrays of one byte per task of the batch
message that the worker runs, each MAX_BATCH_TASKS bytes long:

* cancel flags, written by the pool: 1 when the task is cancelled. The pool
  clears them before it sends a batch and sets one before it sends
  CANCEL_SIGNAL to the worker's main thread;
* task states, written by the worker: TASK_RUNNING while the handler of the
  task runs and TASK_FINISHED after it ended. The pool clears them before it
  sends a batch.

A batch message contains at most MAX_BATCH_TASKS tasks, so the pool sends a
larger batch in parts.
"""

from __future__ import annotations

import signal
import struct
import time
from typing import Any

import orjson

FRAME_HEADER = struct.Struct(">I")
OUTBOX_HEADER = struct.Struct("<Q")
OUTBOX_DATA_OFFSET = OUTBOX_HEADER.size
OUTBOX_SIZE = 1024 * 1024

MAX_BATCH_TASKS = 64 * 1024
CANCEL_FLAGS_OFFSET = OUTBOX_SIZE
TASK_STATES_OFFSET = CANCEL_FLAGS_OFFSET + MAX_BATCH_TASKS
SHARED_MEMORY_SIZE = TASK_STATES_OFFSET + MAX_BATCH_TASKS
TASK_RUNNING = 1
TASK_FINISHED = 2
CANCEL_SIGNAL = signal.SIGUSR1

# Allowance for the error and other fields of a frame. The pool rejects frames
# larger than the result limit plus eight times the log limit plus this value.
MAX_CONTROL_FRAME_BYTES = 16 * 1024 * 1024

CHILD_MODULE = "taskservice.functions.child"


class ProtocolError(Exception):
    """Raised when a peer sends a frame that is oversized or not valid JSON."""


def encode_frame(message: Any) -> bytes:
    """Serialise a message with orjson and prefix it with its length."""
    payload = orjson.dumps(message)
    return FRAME_HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder that splits a byte stream into decoded frames."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._buffer = bytearray()
        self._max_frame_bytes = max_frame_bytes

    @property
    def pending_bytes(self) -> int:
        """Number of buffered bytes that do not form a complete frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Append ``data`` and return every message completed by it."""
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        position = 0
        available = len(buffer)
        header_size = FRAME_HEADER.size
        while available - position >= header_size:
            (length,) = FRAME_HEADER.unpack_from(buffer, position)
            if length > self._max_frame_bytes:
                raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self._max_frame_bytes} bytes")
            end = position + header_size + length
            if end > available:
                break
            try:
                messages.append(orjson.loads(memoryview(buffer)[position + header_size : end]))
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"frame is not valid JSON: {exc}") from None
            position = end
        if position:
            del buffer[:position]
        return messages


def format_timestamp(unix_time: float) -> str:
    """Format a Unix time as ISO 8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    # Rounding to microseconds first, as datetime.fromtimestamp does, keeps the
    # text consistent with the datetime that the pool stores next to the line.
    seconds, millis = divmod(round(unix_time * 1_000_000) // 1000, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def format_log_line(unix_time: float, task_id: str, level: str, text: str) -> str:
    """Build a log line in the layout ``<ISO time>\\t<task id>\\t<LEVEL>\\t<text>``."""
    return f"{format_timestamp(unix_time)}\t{task_id}\t{level}\t{text}"


def task_id_of(task: Any) -> str:
    """Return the task's ``id`` as a string, or an empty string when it has none."""
    if isinstance(task, dict):
        task_id = task.get("id")
        if task_id is not None:
            return str(task_id)
    return ""
