"""Liveness and readiness state shared by the roles of one process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Health:
    """Progress marks per role and the reachability of the database and broker."""

    stall_timeout_s: float = 300.0
    _progress: dict[str, float] = field(default_factory=dict)
    database_ok: bool = True
    broker_ok: bool = True

    def mark_progress(self, role: str) -> None:
        """Record that role's loop completed one iteration now."""
        self._progress[role] = time.monotonic()

    def stalled_roles(self) -> list[str]:
        """Return the roles whose loop has not advanced within stall_timeout_s."""
        now = time.monotonic()
        return [role for role, at in self._progress.items() if now - at > self.stall_timeout_s]

    @property
    def live(self) -> bool:
        """Whether every role's loop still advances."""
        return not self.stalled_roles()

    @property
    def ready(self) -> bool:
        """Whether the database and broker are reachable."""
        return self.database_ok and self.broker_ok
