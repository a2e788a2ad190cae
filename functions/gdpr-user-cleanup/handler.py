"""Delete a deleted user's data at a third-party user-data API (GDPR right to erasure).

Triggered by an ExtraHorizon ``user_deleted`` event, the handler sends
``DELETE {CLEANUP_API_URL}/users/{id}``. A 404 response means the data is
already gone, so running the task twice has the same outcome as running it
once. The handler runs in an isolated subprocess, so it uses only the standard
library.
"""

from __future__ import annotations

import logging
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

USER_DELETED_TYPE = "user_deleted"
DEFAULT_TIMEOUT_SECONDS = 10.0


class CleanupApiUnavailableError(RuntimeError):
    """Transient failure of the cleanup API: no connection, a timeout or a 5xx response."""


class CleanupApiError(RuntimeError):
    """The cleanup API rejected the request with a status that a retry does not change."""


def _require_mapping(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        raise ValueError(f"{field} is missing")
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be a JSON object, got {type(value).__name__}")
    return value


def extract_user_id(task: dict[str, Any]) -> str:
    """Return the deleted user's id from ``task.data.event.content.id``.

    Raises ValueError when the event is missing, is not ``user_deleted`` or has
    no non-empty string id.
    """
    task_data = _require_mapping(task.get("data"), "task.data")
    event = _require_mapping(task_data.get("event"), "task.data.event")
    event_type = event.get("type")
    if event_type is not None and event_type != USER_DELETED_TYPE:
        raise ValueError(f"task.data.event.type must be {USER_DELETED_TYPE!r}, got {event_type!r}")
    content = _require_mapping(event.get("content"), "task.data.event.content")
    user_id = content.get("id")
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"task.data.event.content.id must be a non-empty string, got {user_id!r}")
    return user_id


def read_settings(environment: dict[str, str] | None = None) -> tuple[str, float]:
    """Read the API base URL and the request timeout in seconds from the function's environment.

    Raises ValueError when CLEANUP_API_URL is unset or not an http(s) URL, or
    when CLEANUP_API_TIMEOUT_SECONDS is not a positive number.
    """
    environment = os.environ if environment is None else environment

    base_url = environment.get("CLEANUP_API_URL", "").strip()
    if not base_url:
        raise ValueError("CLEANUP_API_URL is not set: set it in the function's environmentVariables")
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"CLEANUP_API_URL must be an http or https URL, got {base_url!r}")

    timeout_text = environment.get("CLEANUP_API_TIMEOUT_SECONDS", "").strip()
    if not timeout_text:
        return base_url.rstrip("/"), DEFAULT_TIMEOUT_SECONDS
    try:
        timeout = float(timeout_text)
    except ValueError:
        raise ValueError(f"CLEANUP_API_TIMEOUT_SECONDS must be a number of seconds, got {timeout_text!r}") from None
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"CLEANUP_API_TIMEOUT_SECONDS must be greater than 0, got {timeout_text!r}")
    return base_url.rstrip("/"), timeout


def delete_user_data(base_url: str, user_id: str, timeout: float) -> int:
    """Send ``DELETE {base_url}/users/{user_id}`` and return the HTTP status.

    Returns 404 as a result, not an error, because it means the data is already
    deleted. Raises CleanupApiUnavailableError for connection failures, timeouts
    and 5xx responses, and CleanupApiError for any other error status.
    """
    url = f"{base_url}/users/{urllib.parse.quote(user_id, safe='')}"
    request = urllib.request.Request(url, method="DELETE", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        # HTTPError carries an open response body, so close it before leaving.
        error.close()
        if error.code == 404:
            return 404
        if error.code >= 500:
            raise CleanupApiUnavailableError(f"DELETE {url} failed with HTTP status {error.code}") from error
        raise CleanupApiError(f"DELETE {url} failed with HTTP status {error.code}") from error
    except TimeoutError as error:
        raise CleanupApiUnavailableError(f"DELETE {url} timed out after {timeout} s") from error
    except urllib.error.URLError as error:
        raise CleanupApiUnavailableError(f"DELETE {url} failed: {error.reason}") from error


def handle(task: dict[str, Any], context: Any) -> dict[str, Any]:
    """Delete the data of the user named in the ``user_deleted`` event at the cleanup API."""
    log: logging.Logger = getattr(context, "logger", None) or logging.getLogger(__name__)
    user_id = extract_user_id(task)
    base_url, timeout = read_settings()

    status = delete_user_data(base_url, user_id, timeout)

    if status == 404:
        log.info("user %s: cleanup API returned 404, the data was already deleted", user_id)
    else:
        log.info("user %s: cleanup API deleted the data with HTTP status %d", user_id, status)
    return {"userId": user_id, "deleted": True, "status": status}
