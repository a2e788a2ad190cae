"""Validation of deployed function code (a base64 zip archive) and function settings."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from taskservice.api.errors import (
    InvalidFunctionCodeError,
    InvalidFunctionConfigurationError,
    InvalidFunctionNameError,
)
from taskservice.definitions import ENTRY_POINT, FUNCTION_NAME, MAX_CODE_BYTES, MAX_ENVIRONMENT_BYTES

# AWS Lambda's limit on unpacked code; it also stops zip bombs.
MAX_UNPACKED_BYTES = 250 * 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
TIME_LIMIT_RANGE_S = (3, 300)
MEMORY_LIMIT_RANGE_MB = (128, 10_240)
_ENVIRONMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def available_runtimes() -> tuple[str, ...]:
    """Return the runtimes whose code runs as declared: the Python of the runtime pool.

    NOTE: the worker's RuntimePool starts every function with this interpreter. Code for
    another Python installed on the machine would run on this one, so such runtimes are
    rejected until the pool picks the interpreter by runtime.
    """
    return (f"python{sys.version_info.major}.{sys.version_info.minor}",)


@dataclass(frozen=True)
class CheckedCode:
    """A validated zip archive and its SHA-256 digest."""

    zip_bytes: bytes
    digest: str
    names: frozenset[str]


def check_name(name: str) -> str:
    """Return name when it is 1 to 64 letters, digits or '-', else raise 1407."""
    if not FUNCTION_NAME.match(name):
        raise InvalidFunctionNameError(f"function name {name!r} must be 1 to 64 letters, digits or '-'")
    return name


def decode_code(code: str) -> CheckedCode:
    """Decode and check base64 zip code; raise INVALID_FUNCTION_CODE_EXCEPTION with the reason."""
    text = "".join(code.split())
    if not text:
        raise InvalidFunctionCodeError("code is empty; send a base64-encoded zip archive")
    if len(text) > (MAX_CODE_BYTES + 2) // 3 * 4:
        raise InvalidFunctionCodeError(f"code is larger than {MAX_CODE_BYTES} bytes as a zip archive")
    try:
        zip_bytes = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidFunctionCodeError(f"code is not valid base64: {exc}") from exc
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile as exc:
        raise InvalidFunctionCodeError(f"code is not a zip archive: {exc}") from exc
    with archive:
        names = _check_members(archive.infolist())
        try:
            broken = archive.testzip()
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, RuntimeError) as exc:
            raise InvalidFunctionCodeError(f"the zip archive cannot be read: {exc}") from exc
        if broken is not None:
            raise InvalidFunctionCodeError(f"zip member {broken!r} is corrupt (CRC mismatch)")
    return CheckedCode(zip_bytes, hashlib.sha256(zip_bytes).hexdigest(), frozenset(names))


def _check_members(members: list[zipfile.ZipInfo]) -> list[str]:
    files = [member for member in members if not member.is_dir()]
    if not files:
        raise InvalidFunctionCodeError("the zip archive contains no files")
    if len(members) > MAX_ZIP_MEMBERS:
        raise InvalidFunctionCodeError(f"the zip archive has {len(members)} entries, more than {MAX_ZIP_MEMBERS}")
    total = 0
    for member in members:
        _check_member_path(member.filename)
        if member.flag_bits & 0x1:
            raise InvalidFunctionCodeError(f"zip member {member.filename!r} is encrypted")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise InvalidFunctionCodeError(f"zip member {member.filename!r} is a symbolic link")
        total += member.file_size
    if total > MAX_UNPACKED_BYTES:
        raise InvalidFunctionCodeError(f"the zip archive unpacks to {total} bytes, more than {MAX_UNPACKED_BYTES}")
    return [member.filename for member in files]


def _check_member_path(name: str) -> None:
    path = PurePosixPath(name)
    if (not name or "\\" in name or "\0" in name or path.is_absolute() or ".." in path.parts
            or re.match(r"^[A-Za-z]:", name)):
        raise InvalidFunctionCodeError(f"zip member {name!r} points outside the code folder")


def check_entry_point(entry_point: str, names: frozenset[str]) -> str:
    """Check entryPoint's form and that the archive contains its module; raise 1402."""
    if not ENTRY_POINT.match(entry_point):
        raise InvalidFunctionConfigurationError(
            f"entryPoint {entry_point!r} must look like module.function, e.g. handler.handle"
        )
    module = entry_point.rsplit(".", 1)[0].replace(".", "/")
    if f"{module}.py" not in names and f"{module}/__init__.py" not in names:
        raise InvalidFunctionConfigurationError(
            f"entryPoint {entry_point!r} names module {module!r}, but the zip archive has neither "
            f"{module}.py nor {module}/__init__.py at its top level"
        )
    return entry_point


def check_settings(settings: dict[str, Any]) -> None:
    """Check runtime, limits and environment of a function row; raise 1402 naming the field."""
    runtimes = available_runtimes()
    if settings["runtime"] not in runtimes:
        raise InvalidFunctionConfigurationError(
            f"runtime {settings['runtime']!r} is not supported on this server; use {', '.join(runtimes)}"
        )
    low, high = TIME_LIMIT_RANGE_S
    if not low <= settings["time_limit_s"] <= high:
        raise InvalidFunctionConfigurationError(f"timeLimit must be {low} to {high} seconds "
                                                f"(got {settings['time_limit_s']})")
    low, high = MEMORY_LIMIT_RANGE_MB
    if not low <= settings["memory_limit_mb"] <= high:
        raise InvalidFunctionConfigurationError(f"memoryLimit must be {low} to {high} MB "
                                                f"(got {settings['memory_limit_mb']})")
    limit = settings.get("concurrency_limit")
    if limit is not None and limit < 1:
        raise InvalidFunctionConfigurationError(f"concurrencyLimit must be at least 1 (got {limit})")
    _check_environment(settings["environment_variables"])


def _check_environment(variables: dict[str, dict[str, str]]) -> None:
    size = 0
    for name, variable in variables.items():
        value = variable["value"]
        if not _ENVIRONMENT_NAME.match(name):
            raise InvalidFunctionConfigurationError(
                f"environment variable name {name!r} must match [A-Za-z_][A-Za-z0-9_]*"
            )
        if "\0" in value:
            raise InvalidFunctionConfigurationError(f"environment variable {name} contains a NUL character")
        size += len(name.encode()) + len(value.encode())
    if size > MAX_ENVIRONMENT_BYTES:
        raise InvalidFunctionConfigurationError(
            f"environmentVariables take {size} bytes, more than {MAX_ENVIRONMENT_BYTES}"
        )
