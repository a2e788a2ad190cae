"""Values taken from an event: JSONPath paths, input mappings and key templates.

Paths follow RFC 9535 JSONPath (parsed by python-jsonpath) and are evaluated against the
normalised event document, so `$.data.documentId` reads the document id of a document
change whatever the topic's format. A path that names one node (only names and indexes)
is walked directly on the decoded JSON, because a general query costs several times more.
Other paths (wildcards, filters, descendants) give the list of every node they select.

- An input mapping is a JSON object whose keys ending in `.$` take their value from a path:
  `{"userId.$": "$.data.userId", "source": "bp-monitor"}` gives
  `{"userId": "u1", "source": "bp-monitor"}`. Nested objects map the same way.
- A key template is a path alone (`$.data.documentId`) or text with paths in braces
  (`"{$.data.schemaId}/{$.data.documentId}"`). `{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpath
import orjson

PATH_SUFFIX = ".$"
MAX_MAPPING_DEPTH = 16
MAX_TEMPLATE_LENGTH = 1024


class ExpressionError(ValueError):
    """Raised when a path, mapping or template is malformed; the message names it and the fix."""


class MissingValueError(LookupError):
    """Raised when a path that names one node finds nothing in an event."""


_MISSING = object()
_Step = str | int


def _walk(document: Any, steps: tuple[_Step, ...]) -> Any:
    node = document
    for step in steps:
        if isinstance(step, str):
            if not isinstance(node, dict):
                return _MISSING
            node = node.get(step, _MISSING)
            if node is _MISSING:
                return _MISSING
        else:
            if not isinstance(node, list):
                return _MISSING
            try:
                node = node[step]
            except IndexError:
                return _MISSING
    return node


def _singular_steps(compiled: Any) -> tuple[_Step, ...] | None:
    """Return the names and indexes of a path that selects at most one node, else None."""
    steps: list[_Step] = []
    for segment in compiled.segments:
        if type(segment).__name__ != "JSONPathChildSegment" or len(segment.selectors) != 1:
            return None
        selector = segment.selectors[0]
        kind = type(selector).__name__
        if kind == "NameSelector":
            steps.append(selector.name)
        elif kind == "IndexSelector":
            steps.append(selector.index)
        else:
            return None
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class Path:
    """A compiled JSONPath expression."""

    text: str
    _steps: tuple[_Step, ...] | None
    _query: Any

    @property
    def singular(self) -> bool:
        """Whether the path names at most one node (names and indexes only)."""
        return self._steps is not None

    def resolve(self, document: Any) -> Any:
        """Return the node a singular path names, or the list of nodes any other path selects.

        Raises MissingValueError when a singular path finds nothing.
        """
        if self._steps is not None:
            value = _walk(document, self._steps)
            if value is _MISSING:
                raise MissingValueError(f"path {self.text} found nothing in the event")
            return value
        return self._query.findall(document)


def compile_path(text: Any, where: str) -> Path:
    """Compile a JSONPath; `where` names the field in error messages."""
    if not isinstance(text, str):
        raise ExpressionError(f"{where}: a path must be a string such as \"$.data.id\", got {_show(text)}")
    if not text.startswith("$"):
        raise ExpressionError(f"{where}: path {text!r} must start with $, e.g. \"$.data.id\"")
    try:
        query = jsonpath.compile(text)
    except jsonpath.JSONPathError as exc:
        first_line = str(exc).splitlines()[0]
        raise ExpressionError(f"{where}: path {text!r} is not valid JSONPath: {first_line}") from exc
    return Path(text, _singular_steps(query), query)


def _show(value: Any) -> str:
    """Return a value as short JSON (or its repr) for an error message."""
    text = orjson.dumps(value).decode() if _is_json(value) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_json(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


# Input mappings -----------------------------------------------------------------------------


_Builder = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class InputMapping:
    """A compiled input mapping: builds a JSON object from an event document."""

    source: dict[str, Any]
    _build: _Builder

    def apply(self, document: Any) -> dict[str, Any]:
        """Return the mapped object; raises MissingValueError naming the key and path."""
        result: dict[str, Any] = self._build(document)
        return result


def _mapping_builder(mapping: dict[str, Any], where: str, depth: int) -> _Builder:
    if depth > MAX_MAPPING_DEPTH:
        raise ExpressionError(f"{where}: nesting is deeper than {MAX_MAPPING_DEPTH} levels; flatten the mapping")
    parts: list[tuple[str, _Builder]] = []
    names: dict[str, str] = {}
    for key, value in mapping.items():
        location = f"{where}.{key}"
        if key.endswith(PATH_SUFFIX):
            name = key[: -len(PATH_SUFFIX)]
            if not name:
                raise ExpressionError(f"{location}: a mapped key needs a name before \".$\", e.g. \"userId.$\"")
            path = compile_path(value, location)
            parts.append((name, _path_builder(path, location)))
        elif isinstance(value, dict):
            name = key
            parts.append((name, _mapping_builder(value, location, depth + 1)))
        else:
            name = key
            parts.append((name, _constant(value)))
        if name in names:
            raise ExpressionError(
                f"{location}: keys {names[name]!r} and {key!r} both set {name!r}; keep one of them")
        names[name] = key

    def build(document: Any) -> dict[str, Any]:
        return {name: part(document) for name, part in parts}

    return build


def _constant(value: Any) -> _Builder:
    return lambda _document: value


def _path_builder(path: Path, location: str) -> _Builder:
    def build(document: Any) -> Any:
        try:
            return path.resolve(document)
        except MissingValueError:
            raise MissingValueError(
                f"{location}: path {path.text} found nothing in the event; add a filter with "
                f"\"exists\" so such events do not match, or fix the path") from None

    return build


def compile_input(mapping: Any, where: str = "input") -> InputMapping:
    """Validate and compile an input mapping."""
    if not isinstance(mapping, dict):
        raise ExpressionError(
            f"{where}: must be a JSON object such as {{\"userId.$\": \"$.data.userId\"}}, got {_show(mapping)}")
    return InputMapping(mapping, _mapping_builder(mapping, where, 1))


# Key templates ------------------------------------------------------------------------------


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """A compiled key template: text with values from the event."""

    source: str
    _parts: tuple[str | Path, ...]
    _where: str

    def render(self, document: Any) -> str:
        """Return the key for an event; raises MissingValueError naming the path."""
        pieces = []
        for part in self._parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            try:
                value = part.resolve(document)
            except MissingValueError:
                raise MissingValueError(
                    f"{self._where}: path {part.text} found nothing in the event; add a filter with "
                    f"\"exists\" so such events do not match, or fix the path") from None
            pieces.append(_as_text(value))
        return "".join(pieces)


def compile_template(text: Any, where: str) -> KeyTemplate:
    """Validate and compile a key template."""
    if not isinstance(text, str) or not text:
        raise ExpressionError(
            f"{where}: must be a non-empty string such as \"$.data.documentId\" or "
            f"\"doc-{{$.data.documentId}}\", got {_show(text)}")
    if len(text) > MAX_TEMPLATE_LENGTH:
        raise ExpressionError(f"{where}: has {len(text)} characters, more than {MAX_TEMPLATE_LENGTH}; shorten it")
    if text.startswith("$"):
        return KeyTemplate(text, (compile_path(text, where),), where)
    parts: list[str | Path] = []
    position = 0
    for found in _PLACEHOLDER.finditer(text):
        parts.append(text[position:found.start()])
        token = found.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif token in ("{", "}"):
            raise ExpressionError(
                f"{where}: unmatched {token!r} at character {found.start() + 1} of {text!r}; "
                f"write {token * 2} for a literal brace")
        else:
            parts.append(compile_path(found.group(1).strip(), where))
        position = found.end()
    parts.append(text[position:])
    return KeyTemplate(text, tuple(part for part in parts if part != ""), where)
