"""Export the OpenAPI document of the HTTP API: `python -m taskservice.api.openapi docs/openapi.json`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from taskservice.api.app import create_app
from taskservice.config import Settings
from taskservice.health import Health


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document the server serves at /openapi.json."""
    return create_app(Health(), Settings()).openapi()


def render(document: dict[str, Any]) -> bytes:
    """Serialise the document with sorted keys and a final newline, so diffs stay small."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str]) -> int:
    """Write the document to the path given as the only argument."""
    if len(argv) != 1:
        print("usage: python -m taskservice.api.openapi OUTPUT.json", file=sys.stderr)
        return 2
    Path(argv[0]).write_bytes(render(openapi_document()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
