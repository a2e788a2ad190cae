"""Retry decisions: the ExtraHorizon rule and the backoff extensions."""

import random

import pytest

from taskservice.workers.retry import Backoff, RetryPolicy


def test_disabled_policy_never_retries() -> None:
    assert RetryPolicy.from_json({"enabled": False}).retry_delay_s("RuntimeError", 1) is None
    assert RetryPolicy.from_json(None).retry_delay_s("RuntimeError", 1) is None


def test_exh_delays_and_three_retries() -> None:
    policy = RetryPolicy.from_json({"enabled": True, "errorsToRetry": []})
    assert [policy.retry_delay_s("AnyError", attempt) for attempt in (1, 2, 3, 4)] == [2.0, 5.0, 10.0, None]


def test_errors_to_retry_filters_by_name() -> None:
    policy = RetryPolicy.from_json({"enabled": True, "errorsToRetry": ["ValueError"]})
    assert policy.retry_delay_s("ValueError", 1) == 2.0
    assert policy.retry_delay_s("KeyError", 1) is None
    assert policy.retry_delay_s(None, 1) is None


def test_non_retryable_errors_win() -> None:
    policy = RetryPolicy.from_json({"enabled": True, "nonRetryableErrors": ["Runtime.Timeout"]})
    assert policy.retry_delay_s("Runtime.Timeout", 1) is None
    assert policy.retry_delay_s("RuntimeError", 1) == 2.0


def test_max_attempts_counts_runs() -> None:
    policy = RetryPolicy.from_json({"enabled": True, "maxAttempts": 2})
    assert policy.retry_delay_s("E", 1) == 2.0
    assert policy.retry_delay_s("E", 2) is None


def test_zombie_follows_policy() -> None:
    assert RetryPolicy.from_json({"enabled": True}).retry_delay_s("zombieTaskCleaned", 1) == 2.0
    only_value_errors = RetryPolicy.from_json({"enabled": True, "errorsToRetry": ["ValueError"]})
    assert only_value_errors.retry_delay_s("zombieTaskCleaned", 1) is None


def test_exponential_backoff_is_capped() -> None:
    backoff = Backoff(initial_s=1, multiplier=3, max_s=5, jitter=0)
    rng = random.Random(1)
    assert [backoff.delay_s(number, rng) for number in range(4)] == [1, 3, 5, 5]


@pytest.mark.parametrize("retry_number", [0, 1, 5])
def test_jitter_stays_in_band(retry_number: int) -> None:
    backoff = Backoff(initial_s=2, multiplier=2, max_s=1000, jitter=0.25)
    rng = random.Random(7)
    base = 2 * 2**retry_number
    delays = [backoff.delay_s(retry_number, rng) for _ in range(200)]
    assert min(delays) >= base * 0.75
    assert max(delays) <= base * 1.25
    assert len(set(delays)) > 1


def test_backoff_from_json() -> None:
    policy = RetryPolicy.from_json({"enabled": True, "maxAttempts": 5,
                                    "backoff": {"initialSeconds": 0.5, "multiplier": 2, "maxSeconds": 3, "jitter": 0}})
    assert [policy.retry_delay_s("E", attempt) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, None]
