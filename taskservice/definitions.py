"""Function and dispatcher definitions: project function folders and their validation.

A project function is a folder with a `function.toml` and its Python code. Registering it
stores the folder as a zip archive in the database, so every worker runs the same code
wherever it is deployed.
"""

from __future__ import annotations

import hashlib
import io
import re
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskservice.errors import InvalidDefinitionError

FUNCTION_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
ENTRY_POINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
SUPPORTED_RUNTIMES = ("python3.11", "python3.12", "python3.13")
MAX_ENVIRONMENT_BYTES = 4096
MAX_CODE_BYTES = 10 * 1024 * 1024
_SKIPPED_PARTS = {"__pycache__", ".pytest_cache"}


class Backoff(BaseModel):
    """Exponential backoff of retries, an extension of the ExtraHorizon retry policy."""

    model_config = ConfigDict(extra="forbid")

    initialSeconds: float = Field(default=2.0, gt=0, le=86_400)
    multiplier: float = Field(default=2.0, ge=1, le=100)
    maxSeconds: float = Field(default=300.0, gt=0, le=86_400)
    jitter: float = Field(default=0.1, ge=0, le=1)


class RetryPolicy(BaseModel):
    """ExtraHorizon retry policy of a function, with the optional extensions."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    errorsToRetry: list[str] = Field(default_factory=list)
    maxAttempts: int | None = Field(default=None, ge=1, le=100, description="Runs in total; default 4.")
    backoff: Backoff | None = None
    nonRetryableErrors: list[str] = Field(default_factory=list)


class FunctionFile(BaseModel):
    """The contents of a function.toml file, in the ExtraHorizon function field names."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    entryPoint: str
    runtime: str = "python3.11"
    timeLimit: int = Field(default=30, ge=3, le=300)
    memoryLimit: int = Field(default=128, ge=128, le=10240)
    environmentVariables: dict[str, str] = Field(default_factory=dict)
    defaultPriority: int = 0
    concurrencyLimit: int | None = Field(default=None, ge=1, le=100_000)
    retryPolicy: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not FUNCTION_NAME.match(name):
            raise ValueError(f"name {name!r} must be 1 to 64 letters, digits or '-'")
        return name

    @field_validator("entryPoint")
    @classmethod
    def _check_entry_point(cls, entry_point: str) -> str:
        if not ENTRY_POINT.match(entry_point):
            raise ValueError(f"entryPoint {entry_point!r} must look like module.function, e.g. handler.handle")
        return entry_point

    @field_validator("runtime")
    @classmethod
    def _check_runtime(cls, runtime: str) -> str:
        if runtime not in SUPPORTED_RUNTIMES:
            raise ValueError(f"runtime {runtime!r} is not supported; use one of {', '.join(SUPPORTED_RUNTIMES)}")
        return runtime

    @field_validator("environmentVariables")
    @classmethod
    def _check_environment(cls, variables: dict[str, str]) -> dict[str, str]:
        size = sum(len(key.encode()) + len(value.encode()) for key, value in variables.items())
        if size > MAX_ENVIRONMENT_BYTES:
            raise ValueError(f"environmentVariables take {size} bytes, more than {MAX_ENVIRONMENT_BYTES}")
        for key in variables:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"environment variable name {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return variables


def zip_folder(folder: Path) -> bytes:
    """Zip a folder's files in a fixed order with fixed times, so equal code gives equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_dir() or _SKIPPED_PARTS.intersection(relative.parts) or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(relative.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def load_function_folder(folder: Path) -> dict[str, Any]:
    """Read and validate one function folder; return the row for upsert_function."""
    config_path = folder / "function.toml"
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        spec = FunctionFile.model_validate(raw)
    except FileNotFoundError as exc:
        raise InvalidDefinitionError(f"{config_path} is missing; every function folder needs one") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidDefinitionError(f"{config_path} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        raise InvalidDefinitionError(f"{config_path} is invalid: {exc}") from exc
    module_path = spec.entryPoint.rsplit(".", 1)[0].replace(".", "/")
    if not (folder / f"{module_path}.py").is_file() and not (folder / module_path / "__init__.py").is_file():
        raise InvalidDefinitionError(
            f"{config_path}: entryPoint {spec.entryPoint!r} names module {module_path!r}, "
            f"but {folder / (module_path + '.py')} does not exist"
        )
    code_zip = zip_folder(folder)
    if len(code_zip) > MAX_CODE_BYTES:
        raise InvalidDefinitionError(f"{folder} zips to {len(code_zip)} bytes, more than {MAX_CODE_BYTES}")
    settings_text = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    return {
        "name": spec.name,
        "description": spec.description,
        "entry_point": spec.entryPoint,
        "runtime": spec.runtime,
        "code_zip": code_zip,
        "code_digest": hashlib.sha256(code_zip + settings_text).hexdigest(),
        "time_limit_s": spec.timeLimit,
        "memory_limit_mb": spec.memoryLimit,
        "environment_variables": {key: {"value": value} for key, value in spec.environmentVariables.items()},
        "execution_options": {"permissionMode": "permissionRequired", "defaultPriority": spec.defaultPriority},
        "retry_policy": spec.retryPolicy.model_dump(exclude_none=True),
        "concurrency_limit": spec.concurrencyLimit,
    }


def load_function_folders(root: Path) -> list[dict[str, Any]]:
    """Read every function folder under root (each folder with a function.toml)."""
    if not root.is_dir():
        raise InvalidDefinitionError(f"functions folder {root} does not exist; set functions_dir or create it")
    folders = sorted(path.parent for path in root.glob("*/function.toml"))
    definitions = [load_function_folder(folder) for folder in folders]
    names = [definition["name"] for definition in definitions]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidDefinitionError(f"function names used by more than one folder: {', '.join(duplicates)}")
    return definitions
