"""The worker's view of deployed functions: settings from the database, code on local disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from taskservice.functions import FunctionSpec
from taskservice.store.repository import Repository
from taskservice.workers.retry import RetryPolicy

logger = logging.getLogger(__name__)

MISS_RELOAD_INTERVAL_S = 1.0
MAX_AGE_S = 30.0


@dataclass(frozen=True)
class FunctionEntry:
    """A function's runnable spec, or why its tasks cannot run."""

    spec: FunctionSpec | None
    unavailable_reason: str | None = None   # FUNCTION_DISABLED when disabled
    retry_policy: RetryPolicy | None = None


class FunctionCatalog:
    """Loads function settings on demand and unpacks each code version once."""

    def __init__(self, repository: Repository, code_root: Path) -> None:
        self._repository = repository
        self._code_root = code_root.resolve()
        self._entries: dict[str, FunctionEntry] = {}
        self._stale = True
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def mark_stale(self) -> None:
        """Reload settings before the next lookup, after a definitions change notification."""
        self._stale = True

    async def get(self, name: str) -> FunctionEntry | None:
        """Return the function's entry, or None when no function has this name.

        An unknown name reloads the settings unless they were loaded within the last
        MISS_RELOAD_INTERVAL_S, and any lookup reloads settings older than MAX_AGE_S. A change
        whose notification was missed (the listening connection was down) is then seen anyway.
        """
        if time.monotonic() - self._loaded_at >= MAX_AGE_S:
            self._stale = True
        if self._stale or name not in self._entries:
            await self._reload(missing=name)
        return self._entries.get(name)

    async def runnable_specs(self) -> list[FunctionSpec]:
        """Return the specs of every enabled function whose code is available."""
        await self._reload()
        return [entry.spec for entry in self._entries.values() if entry.spec is not None]

    async def _reload(self, missing: str | None = None) -> None:
        async with self._lock:
            # A caller that waited for the lock finds the reload it waited for already done.
            recent = time.monotonic() - self._loaded_at < MISS_RELOAD_INTERVAL_S
            if not self._stale and self._entries and (missing is None or missing in self._entries or recent):
                return
            self._stale = False
            self._loaded_at = time.monotonic()
            rows = await self._repository.list_function_settings()
            entries: dict[str, FunctionEntry] = {}
            for row in rows:
                entries[row["name"]] = await self._entry_for(row)
            self._entries = entries

    async def _entry_for(self, row: object) -> FunctionEntry:
        retry_policy = RetryPolicy.from_json(orjson.loads(row["retry_policy"]))  # type: ignore[index]
        if not row["enabled"]:  # type: ignore[index]
            return FunctionEntry(None, "FUNCTION_DISABLED", retry_policy)
        name: str = row["name"]  # type: ignore[index]
        digest: str = row["code_digest"]  # type: ignore[index]
        variables = orjson.loads(row["environment_variables"])  # type: ignore[index]
        environment = {key: str(value.get("value", "")) for key, value in variables.items()}
        code_dir = await self._ensure_code(name, digest)
        if code_dir is None:
            return FunctionEntry(None, "FUNCTION_NOT_FOUND")
        version_source = orjson.dumps(
            [digest, row["entry_point"], row["time_limit_s"], row["memory_limit_mb"], environment],  # type: ignore[index]
            option=orjson.OPT_SORT_KEYS,
        )
        spec = FunctionSpec(
            name=name,
            code_dir=code_dir,
            entry_point=row["entry_point"],  # type: ignore[index]
            environment=environment,
            time_limit_s=float(row["time_limit_s"]),  # type: ignore[index]
            memory_limit_mb=int(row["memory_limit_mb"]),  # type: ignore[index]
            version=hashlib.sha256(version_source).hexdigest()[:16],
        )
        return FunctionEntry(spec, None, retry_policy)

    async def _ensure_code(self, name: str, digest: str) -> Path | None:
        target = self._code_root / f"{name}-{digest[:16]}"
        if target.is_dir():
            return target
        code_zip = await self._repository.get_function_code(name, digest)
        if code_zip is None:
            return None
        await asyncio.to_thread(_unpack, code_zip, target)
        logger.info("unpacked code of function %s", name, extra={"event": "code_unpacked", "function": name})
        return target


def _unpack(code_zip: bytes, target: Path) -> None:
    """Unpack into a temporary sibling, then rename, so a half-written folder is never used."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(io.BytesIO(code_zip)) as archive:
        for member in archive.namelist():
            resolved = (staging / member).resolve()
            if not resolved.is_relative_to(staging.resolve()):
                raise ValueError(f"zip member {member!r} points outside the code folder")
        archive.extractall(staging)
    try:
        staging.rename(target)
    except OSError:
        # Another worker unpacked the same version first.
        shutil.rmtree(staging, ignore_errors=True)
