"""Capture of log output inside a worker process.

Logging records (root logger and below) and text written to ``sys.stdout`` or
``sys.stderr`` go to the log buffer of the task that is running. Output written
between tasks, including output of module import, goes to the buffer of the
next task. Printed text is split into one entry per line, with level INFO for
stdout and ERROR for stderr. A logging record stays one entry, so a traceback
attached to a record keeps its newlines.

``max_bytes`` caps the UTF-8 bytes of a task's log lines, each counted in its
final layout ``<ISO time>\t<task id>\t<LEVEL>\t<text>``. Entries past the cap
are dropped and counted, and one extra line at the end reports the number of
dropped bytes. NUL characters and lone surrogates, which PostgreSQL cannot
store, are replaced with U+FFFD.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from typing import Any

from taskservice.functions.protocol import format_log_line
from taskservice.functions.storable_text import make_storable

DROPPED_LEVEL = "WARNING"

# A 24-character timestamp and three tabs.
_LINE_PREFIX_BYTES = 27


class TaskLogBuffer:
    """Log entries of one task, capped at ``max_bytes`` of text."""

    __slots__ = ("entries", "size", "dropped", "max_bytes", "task_id_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.entries: list[tuple[float, str, str]] = []
        self.size = 0
        self.dropped = 0
        self.max_bytes = max_bytes
        self.task_id_bytes = 0

    def set_task_id(self, task_id: str) -> None:
        """Count ``task_id`` in every line, dropping the newest entries if the buffer no longer fits."""
        extra = len(task_id.encode("utf-8", "backslashreplace")) - self.task_id_bytes
        self.task_id_bytes += extra
        self.size += extra * len(self.entries)
        while self.size > self.max_bytes and self.entries:
            _, level, text = self.entries.pop()
            length = self._line_bytes(level, text)
            self.size -= length
            self.dropped += length

    def _line_bytes(self, level: str, text: str) -> int:
        text_bytes = len(text) if text.isascii() else len(text.encode("utf-8"))
        return _LINE_PREFIX_BYTES + self.task_id_bytes + len(level) + text_bytes

    def add(self, timestamp: float, level: str, text: str) -> None:
        """Store one entry, or count its bytes as dropped when the cap is reached.

        NUL characters and lone surrogates in ``text`` are replaced with U+FFFD.
        """
        text = make_storable(text)
        length = self._line_bytes(level, text)
        if self.size + length > self.max_bytes:
            self.dropped += length
            return
        self.size += length
        self.entries.append((timestamp, level, text))

    def dropped_notice(self) -> str:
        """Return the text of the line that reports dropped output."""
        return (
            f"Dropped {self.dropped} bytes of log output because the task exceeded "
            f"the log limit of {self.max_bytes} bytes"
        )

    def render(self, task_id: str, now: float) -> list[list[Any]]:
        """Return ``[[unix_time, line], ...]`` with the dropped-output line last when needed."""
        lines: list[list[Any]] = [
            [timestamp, format_log_line(timestamp, task_id, level, text)] for timestamp, level, text in self.entries
        ]
        if self.dropped:
            lines.append([now, format_log_line(now, task_id, DROPPED_LEVEL, self.dropped_notice())])
        return lines

    def raw_entries(self, now: float) -> list[list[Any]]:
        """Return ``[[unix_time, level, text], ...]`` for output that is not tied to a task id yet."""
        entries: list[list[Any]] = [[timestamp, level, text] for timestamp, level, text in self.entries]
        if self.dropped:
            entries.append([now, DROPPED_LEVEL, self.dropped_notice()])
        return entries


class LogRouter:
    """Sends captured output to the buffer of the current task."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.current = TaskLogBuffer(max_bytes)
        self.streams: list[StreamCapture] = []

    def add(self, timestamp: float, level: str, text: str) -> None:
        """Add an entry to the current task's buffer."""
        self.current.add(timestamp, level, text)

    def take(self) -> TaskLogBuffer:
        """Flush partial printed lines and return the current buffer, starting a new one."""
        for stream in self.streams:
            stream.flush_partial()
        buffer = self.current
        self.current = TaskLogBuffer(self.max_bytes)
        return buffer


class StreamCapture(io.TextIOBase):
    """Text stream that turns each written line into a log entry."""

    def __init__(self, router: LogRouter, level: str, fd: int) -> None:
        super().__init__()
        self._router = router
        self._level = level
        self._fd = fd
        self._partial: list[str] = []
        self._partial_length = 0
        self.buffer = _BinaryCapture(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """Return the process-level descriptor, whose output the pool logs but does not add to task logs."""
        return self._fd

    def flush(self) -> None:
        """Do nothing: complete lines are stored when written and partial lines when the task ends."""

    def write(self, text: str) -> int:
        """Store every complete line of ``text`` and keep the rest until a newline or the task end."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if "\n" not in text:
            if text:
                self._partial.append(text)
                self._partial_length += len(text)
                if self._partial_length > self._router.max_bytes:
                    self.flush_partial()
            return len(text)
        parts = text.split("\n")
        if self._partial:
            parts[0] = "".join(self._partial) + parts[0]
            self._partial.clear()
            self._partial_length = 0
        now = time.time()
        for line in parts[:-1]:
            self._router.add(now, self._level, line.removesuffix("\r"))
        if parts[-1]:
            self._partial.append(parts[-1])
            self._partial_length = len(parts[-1])
        return len(text)

    def flush_partial(self) -> None:
        """Store text written without a trailing newline as its own entry."""
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._partial_length = 0
            self._router.add(time.time(), self._level, line.removesuffix("\r"))


class _BinaryCapture:
    """Minimal ``sys.stdout.buffer`` replacement that decodes bytes as UTF-8."""

    def __init__(self, text_stream: StreamCapture) -> None:
        self._text_stream = text_stream

    def write(self, data: bytes) -> int:
        self._text_stream.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        """Do nothing: the text stream stores lines as they are written."""


class TaskLogHandler(logging.Handler):
    """Logging handler that stores each record as one entry of the current task."""

    def __init__(self, router: LogRouter) -> None:
        super().__init__()
        self._router = router
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging reports formatting errors through handleError
            self.handleError(record)
            return
        self._router.add(record.created, record.levelname, text)


def install_capture(router: LogRouter) -> None:
    """Replace sys.stdout, sys.stderr and the root logger's handlers with capturing ones.

    The root logger level is set to INFO so that ``logger.info`` calls appear
    without extra configuration. Handler code may change it.
    """
    stdout = StreamCapture(router, "INFO", 1)
    stderr = StreamCapture(router, "ERROR", 2)
    router.streams = [stdout, stderr]
    sys.stdout = stdout
    sys.stderr = stderr

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(TaskLogHandler(router))
    root.setLevel(logging.INFO)
