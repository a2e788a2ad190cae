"""The exported JSON Schema files match the pydantic models of the topic contracts."""

from pathlib import Path

from taskservice.schemas.export import render_schemas

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def test_schema_files_match_models() -> None:
    for file_name, content in render_schemas().items():
        path = SCHEMAS_DIR / file_name
        assert path.is_file(), f"{path} is missing; run `make schemas`"
        assert path.read_bytes() == content, f"{path} differs from its model; run `make schemas`"


def test_no_stale_schema_files() -> None:
    expected = set(render_schemas())
    present = {path.name for path in SCHEMAS_DIR.glob("*.json")}
    assert present == expected
