"""Retry decisions: the ExtraHorizon retry policy and its documented extensions.

ExtraHorizon's rule: when `enabled`, a failed run is retried when `errorsToRetry` is
empty or lists the run's error name, at most 3 times, after 2, 5 and 10 seconds counted
from the end of the failed run. Each retry is a new task linked to the failed one.

Extensions, all optional fields of `retryPolicy`:
- `maxAttempts`: runs in total across the chain (default 4, that is 3 retries);
- `backoff`: `{"initialSeconds", "multiplier", "maxSeconds", "jitter"}`, exponential
  delays `initial × multiplier^retry`, capped at `maxSeconds`, each multiplied by a
  random factor in `[1 − jitter, 1 + jitter]`;
- `nonRetryableErrors`: error names never retried, even when `errorsToRetry` is empty.

A cancelled task is never retried. A run recovered by the lease sweep fails with the
error name `zombieTaskCleaned` and follows the same rule, so it is retried when the
policy is enabled and `errorsToRetry` is empty or lists that name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

EXH_DELAYS_S = (2.0, 5.0, 10.0)
DEFAULT_MAX_ATTEMPTS = 4
ZOMBIE_ERROR_NAME = "zombieTaskCleaned"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter and a cap."""

    initial_s: float = 2.0
    multiplier: float = 2.0
    max_s: float = 300.0
    jitter: float = 0.1

    def delay_s(self, retry_number: int, rng: random.Random) -> float:
        """Return the wait before retry number retry_number (0 for the first retry)."""
        base = min(self.initial_s * self.multiplier**retry_number, self.max_s)
        if self.jitter <= 0:
            return base
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class RetryPolicy:
    """A function's retry policy in decision form."""

    enabled: bool = False
    errors_to_retry: frozenset[str] = frozenset()
    non_retryable_errors: frozenset[str] = frozenset()
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: Backoff | None = None
    _rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> RetryPolicy:
        """Build a policy from the stored `retryPolicy` object; missing fields take defaults."""
        value = value or {}
        backoff = value.get("backoff")
        return cls(
            enabled=bool(value.get("enabled", False)),
            errors_to_retry=frozenset(value.get("errorsToRetry") or ()),
            non_retryable_errors=frozenset(value.get("nonRetryableErrors") or ()),
            max_attempts=int(value.get("maxAttempts") or DEFAULT_MAX_ATTEMPTS),
            backoff=Backoff(
                initial_s=float(backoff.get("initialSeconds", 2.0)),
                multiplier=float(backoff.get("multiplier", 2.0)),
                max_s=float(backoff.get("maxSeconds", 300.0)),
                jitter=float(backoff.get("jitter", 0.1)),
            ) if isinstance(backoff, dict) else None,
        )

    def retry_delay_s(self, error_name: str | None, attempt: int) -> float | None:
        """Return the wait before the next run, or None when the failed run must not be retried.

        attempt is the number of the run that failed, counted across the retry chain
        from 1.
        """
        if not self.enabled or attempt >= self.max_attempts:
            return None
        name = error_name or ""
        if name in self.non_retryable_errors:
            return None
        if self.errors_to_retry and name not in self.errors_to_retry:
            return None
        retry_number = attempt - 1
        if self.backoff is not None:
            return self.backoff.delay_s(retry_number, self._rng)
        return EXH_DELAYS_S[min(retry_number, len(EXH_DELAYS_S) - 1)]
