"""Export the JSON Schema of every topic contract to the top-level schemas/ folder.

Run `python -m taskservice.schemas.export schemas` after changing a model; a test fails
while the files differ from the models.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from taskservice.schemas.events import (
    CloudEvent, DebeziumChange, DebeziumChangeWithSchema, DocumentChangeEvent, ExhEvent,
)
from taskservice.schemas.results import TaskResultMessage

CONTRACTS: dict[str, type[BaseModel]] = {
    "exh-event.schema.json": ExhEvent,
    "document-change-event.schema.json": DocumentChangeEvent,
    "cloud-event.schema.json": CloudEvent,
    "debezium-change-event.schema.json": DebeziumChange,
    "debezium-change-event-with-schema.schema.json": DebeziumChangeWithSchema,
    "task-result.schema.json": TaskResultMessage,
}


def render_schemas() -> dict[str, bytes]:
    """Return the file name and bytes of each contract's JSON Schema."""
    rendered: dict[str, bytes] = {}
    for file_name, model in CONTRACTS.items():
        schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
        schema.update(model.model_json_schema())
        rendered[file_name] = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    return rendered


def write_schemas(folder: Path) -> list[Path]:
    """Write every schema file into folder; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, content in render_schemas().items():
        path = folder / file_name
        path.write_bytes(content)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")
    for path in write_schemas(target):
        print(path)
