"""Paths, input mappings and key templates evaluated against event documents."""

from __future__ import annotations

import pytest

from taskservice.consumers.expressions import (
    ExpressionError,
    MissingValueError,
    compile_input,
    compile_path,
    compile_template,
)

DOCUMENT = {
    "id": "e1",
    "type": "document.transitioned",
    "data": {
        "schemaId": "s1",
        "documentId": "d1",
        "status": "analyzed",
        "count": 3,
        "flag": False,
        "nothing": None,
        "items": [{"x": 1}, {"x": 2}],
        "odd key": "spaced",
    },
}


@pytest.mark.parametrize(("path", "expected"), [
    ("$.id", "e1"),
    ("$.data.documentId", "d1"),
    ("$.data.count", 3),
    ("$.data.flag", False),
    ("$.data.nothing", None),
    ("$.data.items[1].x", 2),
    ("$.data.items[-1].x", 2),
    ("$['data']['odd key']", "spaced"),
    ("$.data.items", [{"x": 1}, {"x": 2}]),
    ("$", DOCUMENT),
])
def test_singular_paths_return_the_node(path: str, expected: object) -> None:
    compiled = compile_path(path, "input.value.$")
    assert compiled.singular
    assert compiled.resolve(DOCUMENT) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("$.data.items[*].x", [1, 2]),
    ("$..x", [1, 2]),
    ("$.data.items[?@.x > 1].x", [2]),
    ("$.data.missing[*]", []),
])
def test_other_paths_return_every_selected_node(path: str, expected: list[object]) -> None:
    compiled = compile_path(path, "input.value.$")
    assert not compiled.singular
    assert compiled.resolve(DOCUMENT) == expected


@pytest.mark.parametrize("path", ["$.data.missing", "$.data.items[5]", "$.data.status.inner", "$.id[0]",
                                  "$.data.items.x"])
def test_singular_path_that_finds_nothing_raises(path: str) -> None:
    with pytest.raises(MissingValueError, match="found nothing"):
        compile_path(path, "x").resolve(DOCUMENT)


@pytest.mark.parametrize(("path", "fragment"), [
    (5, "a path must be a string"),
    ("data.id", "must start with $"),
    ("$.data[", "is not valid JSONPath"),
    ("$.data.[x", "is not valid JSONPath"),
])
def test_malformed_paths_are_rejected_with_the_field(path: object, fragment: str) -> None:
    with pytest.raises(ExpressionError, match="input.userId.\\$") as caught:
        compile_path(path, "input.userId.$")
    assert fragment in str(caught.value)


def test_input_mapping_mixes_paths_constants_and_nested_objects() -> None:
    mapping = compile_input({
        "userId.$": "$.data.documentId",
        "source": "bp-monitor",
        "limits": {"count.$": "$.data.count", "fixed": [1, 2]},
        "xs.$": "$.data.items[*].x",
    })
    assert mapping.apply(DOCUMENT) == {
        "userId": "d1", "source": "bp-monitor", "limits": {"count": 3, "fixed": [1, 2]}, "xs": [1, 2]}


def test_mapping_names_missing_path() -> None:
    mapping = compile_input({"outer": {"userId.$": "$.data.userId"}})
    with pytest.raises(MissingValueError, match=r"input\.outer\.userId\.\$: path \$\.data\.userId found nothing"):
        mapping.apply(DOCUMENT)


@pytest.mark.parametrize(("mapping", "fragment"), [
    ([], "must be a JSON object"),
    ({"userId.$": 5}, "input.userId.$: a path must be a string"),
    ({".$": "$.id"}, "needs a name before"),
    ({"a": 1, "a.$": "$.id"}, "both set 'a'"),
    ({"a": {"b.$": "nope"}}, "input.a.b.$: path 'nope' must start with $"),
])
def test_malformed_input_mappings_are_rejected(mapping: object, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_input(mapping)
    assert fragment in str(caught.value)


def test_input_mapping_depth_is_capped() -> None:
    mapping: dict[str, object] = {"leaf": 1}
    for _ in range(20):
        mapping = {"level": mapping}
    with pytest.raises(ExpressionError, match="deeper than"):
        compile_input(mapping)


@pytest.mark.parametrize(("template", "expected"), [
    ("$.data.documentId", "d1"),
    ("doc-{$.data.documentId}", "doc-d1"),
    ("{$.data.schemaId}/{ $.data.documentId }", "s1/d1"),
    ("{{literal}} {$.data.count}", "{literal} 3"),
    ("{$.data.flag}-{$.data.nothing}", "false-null"),
    ("{$.data.items[0]}", '{"x":1}'),
    ("{$.data.items[*].x}", "[1,2]"),
    ("constant", "constant"),
])
def test_key_templates_render_values_as_text(template: str, expected: str) -> None:
    assert compile_template(template, "deduplicationKey").render(DOCUMENT) == expected


@pytest.mark.parametrize(("template", "fragment"), [
    ("", "non-empty string"),
    (7, "non-empty string"),
    ("doc-{$.data.id", "unmatched '{'"),
    ("doc}", "unmatched '}'"),
    ("{data.id}", "must start with $"),
    ("x" * 2000, "more than 1024"),
])
def test_malformed_key_templates_are_rejected(template: object, fragment: str) -> None:
    with pytest.raises(ExpressionError, match="concurrencyKey") as caught:
        compile_template(template, "concurrencyKey")
    assert fragment in str(caught.value)


def test_key_template_names_the_path_that_found_nothing() -> None:
    template = compile_template("doc-{$.data.userId}", "deduplicationKey")
    with pytest.raises(MissingValueError, match=r"deduplicationKey: path \$\.data\.userId found nothing"):
        template.render(DOCUMENT)
