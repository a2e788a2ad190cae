"""Liveness and readiness state shared by the roles of one process.

Readiness: the last health check reached the database and, in processes that use one,
the broker. Liveness: every role's loop completed an iteration within stall_timeout_s.
While the database or broker is unreachable the stall clock is held, because a loop that
waits for a dependency is not stuck and a restart would not bring the dependency back.
The clock starts again when both are reachable.
"""

from __future__ import annotations

import time

from taskservice import metrics


class Health:
    """Progress marks per role and the reachability of the database and broker."""

    def __init__(self, stall_timeout_s: float = 300.0) -> None:
        self.stall_timeout_s = stall_timeout_s
        self._progress: dict[str, float] = {}
        self._database_ok = True
        self._broker_ok = True
        self._reachable_since = time.monotonic()

    def watch(self, role: str) -> None:
        """Start the stall clock of a role whose loop is about to start."""
        self._progress.setdefault(role, time.monotonic())
        metrics.ROLE_RUNNING.labels(role=role).set(1)

    def unwatch_all(self) -> None:
        """Stop watching every role, at shutdown."""
        for role in self._progress:
            metrics.ROLE_RUNNING.labels(role=role).set(0)
        self._progress.clear()

    def mark_progress(self, role: str) -> None:
        """Record that role's loop completed one iteration now."""
        self._progress[role] = time.monotonic()
        metrics.ROLE_PROGRESS_TIMESTAMP_SECONDS.labels(role=role).set(time.time())

    def stalled_roles(self) -> list[str]:
        """Return the roles whose loop has not advanced within stall_timeout_s while dependencies were reachable."""
        if not self.ready:
            return []
        now = time.monotonic()
        return [role for role, at in self._progress.items()
                if now - max(at, self._reachable_since) > self.stall_timeout_s]

    @property
    def live(self) -> bool:
        """Whether every role's loop still advances."""
        return not self.stalled_roles()

    @property
    def ready(self) -> bool:
        """Whether the database and broker are reachable."""
        return self._database_ok and self._broker_ok

    @property
    def database_ok(self) -> bool:
        """Whether the last health check reached the database."""
        return self._database_ok

    @database_ok.setter
    def database_ok(self, ok: bool) -> None:
        self._set_reachable("database", ok)

    @property
    def broker_ok(self) -> bool:
        """Whether the last health check reached the broker."""
        return self._broker_ok

    @broker_ok.setter
    def broker_ok(self, ok: bool) -> None:
        self._set_reachable("broker", ok)

    def _set_reachable(self, dependency: str, ok: bool) -> None:
        was_ready = self.ready
        if dependency == "database":
            self._database_ok = ok
        else:
            self._broker_ok = ok
        if self.ready and not was_ready:
            self._reachable_since = time.monotonic()
        metrics.DEPENDENCY_REACHABLE.labels(dependency=dependency).set(1 if ok else 0)
