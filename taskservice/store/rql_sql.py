"""Compile a parsed RQL query into a parameterised WHERE clause, ORDER BY and paging.

Only fixed SQL fragments are written into the statement: column expressions come from
each resource's field table, operators from the cases below. Every value, and every path
into a JSON column, is a `$n` parameter, so no query text reaches the SQL itself.

Semantics:
- `eq` on an array field (text[] column or JSON array) matches when the array contains
  the value; `in` matches when any element is listed.
- `ne` and `out` also match rows where the field is absent (NULL), as in MongoDB.
- `like(field,text)` is a case-insensitive substring match; `%`, `_` and `\\` are literal.
- `contains(field)` matches a present value (a non-empty array for text[] columns);
  `contains(field,expr,…)` matches when one element of a JSON array satisfies every
  expression, whose field names are paths inside the element. `excludes` negates both.
- Values are typed by the column: text columns compare the value's text, number columns
  need a number, timestamp columns need an ISO-8601 date or epoch milliseconds. Inside
  JSON, values keep their RQL type (`5` matches the number 5, `string:5` the text "5"),
  and order comparisons only match values of the same JSON type.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from taskservice.api.rql import (
    COMPARISONS,
    Atom,
    Call,
    Group,
    Node,
    Query,
    RqlError,
    Value,
)

MAX_PARAMETERS = 500


class FieldType(enum.Enum):
    """How a wire field is stored, which decides the SQL of each operator."""

    TEXT = "text"
    NUMBER = "numeric"
    TIMESTAMP = "timestamptz"
    BOOLEAN = "boolean"
    TEXT_ARRAY = "text[]"
    JSON = "jsonb"


@dataclass(frozen=True)
class Field:
    """A filterable wire field: its SQL expression and storage type."""

    sql: str
    type: FieldType
    sortable: bool = True


@dataclass(frozen=True)
class Resource:
    """The fields of one listed resource, its default order and its unique tie-break column."""

    name: str
    fields: dict[str, Field]
    default_order: str
    tiebreak: str


@dataclass
class CompiledQuery:
    """SQL pieces of a list query; `parameters` fill `$1…$n` of where, then of order.

    The first `where_parameters` of them belong to the WHERE clause, which is all a count needs.
    """

    where: str
    order: str
    parameters: list[Any]
    where_parameters: int
    limit: int
    offset: int
    select: list[str] | None
    skip_count: bool


@dataclass
class _Parameters:
    values: list[Any] = field(default_factory=list)

    def add(self, value: Any, cast: str) -> str:
        if len(self.values) >= MAX_PARAMETERS:
            raise RqlError(f"the query uses more than {MAX_PARAMETERS} values")
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


def compile_query(query: Query, resource: Resource, *, default_limit: int, max_limit: int) -> CompiledQuery:
    """Compile query against resource; limit is clamped to max_limit."""
    parameters = _Parameters()
    where = _Compiler(resource, parameters).node(query.filter) if query.filter is not None else "TRUE"
    where_parameters = len(parameters.values)
    order = _order(query.sort, resource, parameters)
    select = None
    if query.select is not None:
        for name in query.select:
            if name not in resource.fields:
                raise RqlError(f"select(): unknown field {name!r} of {resource.name}")
        select = list(query.select)
    limit = min(query.limit or default_limit, max_limit)
    return CompiledQuery(where, order, parameters.values, where_parameters, limit, query.offset, select,
                         query.skip_count)


def _order(sort: Sequence[tuple[str, bool]], resource: Resource, parameters: _Parameters) -> str:
    if not sort:
        return f"{resource.default_order}, {resource.tiebreak} ASC"
    terms = []
    for name, descending in sort:
        expression = _Compiler(resource, parameters).sort_expression(name)
        terms.append(f"{expression} {'DESC' if descending else 'ASC'}")
    # The id breaks ties in the direction of the first term, so one index scan can serve both.
    return ", ".join([*terms, f"{resource.tiebreak} {'DESC' if sort[0][1] else 'ASC'}"])


class _Compiler:
    """Compiles filter nodes; `element` is set inside contains() on a JSON array."""

    def __init__(self, resource: Resource, parameters: _Parameters, element: str | None = None,
                 depth: int = 0) -> None:
        self.resource = resource
        self.parameters = parameters
        self.element = element
        self.depth = depth

    def node(self, node: Node) -> str:
        if not isinstance(node, Call):
            raise RqlError(f"expected an operator, got the plain value {_describe(node)}")
        if node.name in ("and", "or"):
            if not node.args:
                raise RqlError(f"{node.name}() needs at least one expression")
            joined = f" {node.name.upper()} ".join(self.node(arg) for arg in node.args)
            return f"({joined})"
        if node.name in COMPARISONS or node.name == "like":
            return self._binary(node)
        if node.name in ("in", "out"):
            return self._membership(node)
        if node.name in ("contains", "excludes"):
            return self._contains(node)
        raise RqlError(f"{node.name}() is not a filter operator")

    # Field resolution ---------------------------------------------------------------

    def _field(self, node: Node, operator: str) -> tuple[str, FieldType]:
        if not isinstance(node, Atom):
            raise RqlError(f"{operator}() expects a field name first, got {_describe(node)}")
        name = node.name()
        if not name:
            raise RqlError(f"{operator}() expects a field name first")
        if self.element is not None:
            return self._json_path(self.element, name.split(".")), FieldType.JSON
        if name in self.resource.fields:
            found = self.resource.fields[name]
            return found.sql, found.type
        root, _, rest = name.partition(".")
        parent = self.resource.fields.get(root)
        if parent is not None and parent.type is FieldType.JSON and rest:
            return self._json_path(parent.sql, rest.split(".")), FieldType.JSON
        known = ", ".join(sorted(self.resource.fields))
        raise RqlError(f"unknown field {name!r} of {self.resource.name}; known fields: {known}")

    def _json_path(self, base: str, segments: list[str]) -> str:
        if any(not segment for segment in segments):
            raise RqlError(f"field path {'.'.join(segments)!r} has an empty part")
        return f"({base} #> {self.parameters.add(segments, 'text[]')})"

    def sort_expression(self, name: str) -> str:
        expression, field_type = self._field(Atom(name), "sort")
        declared = self.resource.fields.get(name)
        if field_type is FieldType.TEXT_ARRAY or (declared is not None and not declared.sortable):
            raise RqlError(f"sort(): field {name!r} cannot be sorted on")
        return expression

    # Operators ------------------------------------------------------------------------

    def _binary(self, node: Call) -> str:
        if len(node.args) != 2:
            raise RqlError(f"{node.name}() takes a field and one value, e.g. {node.name}(status,new)")
        column, field_type = self._field(node.args[0], node.name)
        value = _value(node.args[1], node.name)
        if node.name == "like":
            return self._like(column, field_type, value)
        if field_type is FieldType.JSON:
            return self._json_compare(node.name, column, value)
        if field_type is FieldType.TEXT_ARRAY:
            return self._array_compare(node.name, column, value)
        if value.kind == "null":
            if node.name == "eq":
                return f"{column} IS NULL"
            if node.name == "ne":
                return f"{column} IS NOT NULL"
            raise RqlError(f"{node.name}() cannot compare with null")
        if field_type is FieldType.BOOLEAN and node.name not in ("eq", "ne"):
            raise RqlError(f"{node.name}() cannot be used on a boolean field")
        parameter = self.parameters.add(_scalar(value, field_type), field_type.value)
        if node.name == "ne":
            return f"{column} IS DISTINCT FROM {parameter}"
        return f"{column} {_SQL_COMPARISON[node.name]} {parameter}"

    def _membership(self, node: Call) -> str:
        if len(node.args) < 2:
            raise RqlError(f"{node.name}() takes a field and at least one value, e.g. {node.name}(status,new,failed)")
        column, field_type = self._field(node.args[0], node.name)
        values = _values(node.args[1:], node.name)
        if field_type is FieldType.JSON:
            matched = " OR ".join(self._json_equal(column, value) for value in values)
            matched = f"({matched})"
        elif field_type is FieldType.TEXT_ARRAY:
            matched = f"({column} && {self.parameters.add([value.text for value in values], 'text[]')})"
        else:
            scalars = [_scalar(value, field_type) for value in values if value.kind != "null"]
            matched = f"({column} = ANY({self.parameters.add(scalars, field_type.value + '[]')}))"
            if any(value.kind == "null" for value in values):
                matched = f"({matched} OR {column} IS NULL)"
        return matched if node.name == "in" else f"({matched} IS NOT TRUE)"

    def _like(self, column: str, field_type: FieldType, value: Value) -> str:
        escaped = value.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = self.parameters.add(f"%{escaped}%", "text")
        if field_type is FieldType.TEXT:
            return f"({column} ILIKE {pattern})"
        if field_type is FieldType.TEXT_ARRAY:
            return f"EXISTS (SELECT 1 FROM unnest({column}) AS item WHERE item ILIKE {pattern})"
        if field_type is FieldType.JSON:
            return f"(jsonb_typeof({column}) = 'string' AND ({column} #>> '{{}}') ILIKE {pattern})"
        raise RqlError("like() only works on text fields")

    def _array_compare(self, operator: str, column: str, value: Value) -> str:
        if operator not in ("eq", "ne"):
            raise RqlError(f"{operator}() cannot be used on an array field; use eq, ne, in, out or like")
        contained = f"({self.parameters.add(value.text, 'text')} = ANY({column}))"
        return contained if operator == "eq" else f"({contained} IS NOT TRUE)"

    def _json_equal(self, column: str, value: Value) -> str:
        if value.kind == "null":
            return f"({column} IS NULL OR {column} = 'null'::jsonb)"
        parameter = self.parameters.add(_json_text(value), "text::jsonb")
        return (f"({column} = {parameter} OR (jsonb_typeof({column}) = 'array' "
                f"AND {column} @> jsonb_build_array({parameter})))")

    def _json_compare(self, operator: str, column: str, value: Value) -> str:
        if operator == "eq":
            return self._json_equal(column, value)
        if operator == "ne":
            return f"({self._json_equal(column, value)} IS NOT TRUE)"
        if value.kind == "null":
            raise RqlError(f"{operator}() cannot compare with null")
        parameter = self.parameters.add(_json_text(value), "text::jsonb")
        return (f"(jsonb_typeof({column}) = jsonb_typeof({parameter}) "
                f"AND {column} {_SQL_COMPARISON[operator]} {parameter})")

    def _contains(self, node: Call) -> str:
        if not node.args:
            raise RqlError(f"{node.name}() needs a field, e.g. {node.name}(tags)")
        column, field_type = self._field(node.args[0], node.name)
        if len(node.args) == 1:
            if field_type is FieldType.TEXT_ARRAY:
                present = f"(cardinality({column}) > 0)"
            elif field_type is FieldType.JSON:
                present = f"({column} IS NOT NULL AND {column} <> 'null'::jsonb)"
            else:
                present = f"({column} IS NOT NULL)"
        else:
            if field_type is not FieldType.JSON:
                raise RqlError(f"{node.name}() with expressions needs a JSON array field such as data.items")
            if self.depth >= 8:
                raise RqlError(f"{node.name}() nests deeper than 8 levels")
            alias = f"element_{self.depth}"
            inner = _Compiler(self.resource, self.parameters, f"{alias}.value", self.depth + 1)
            conditions = " AND ".join(inner.node(arg) for arg in node.args[1:])
            present = (f"EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({column}) = 'array' "
                       f"THEN {column} ELSE '[]'::jsonb END) AS {alias}(value) WHERE {conditions})")
        return present if node.name == "contains" else f"({present} IS NOT TRUE)"


_SQL_COMPARISON = {"eq": "=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _describe(node: Node) -> str:
    if isinstance(node, Atom):
        return repr(node.raw)
    if isinstance(node, Group):
        return "a parenthesised list"
    return f"{node.name}()"


def _value(node: Node, operator: str) -> Value:
    if not isinstance(node, Atom):
        raise RqlError(f"{operator}() expects a plain value, got {_describe(node)}")
    return node.value()


def _values(nodes: Sequence[Node], operator: str) -> list[Value]:
    if len(nodes) == 1 and isinstance(nodes[0], Group):
        nodes = nodes[0].items
        if not nodes:
            raise RqlError(f"{operator}() needs at least one value")
    return [_value(node, operator) for node in nodes]


def _scalar(value: Value, field_type: FieldType) -> Any:
    if field_type is FieldType.TEXT:
        return value.text
    if field_type is FieldType.NUMBER:
        if value.kind != "number":
            raise RqlError(f"{value.text!r} is not a number")
        return value.number
    if field_type is FieldType.TIMESTAMP:
        if value.kind == "date":
            return value.date
        if value.kind == "number" and isinstance(value.number, int) and abs(value.number) < 10**15:
            return datetime.fromtimestamp(value.number / 1000, UTC)
        raise RqlError(f"{value.text!r} is not a date; use ISO-8601 such as 2025-01-31T09:00:00.000Z")
    if field_type is FieldType.BOOLEAN:
        if value.kind != "boolean":
            raise RqlError(f"{value.text!r} is not true or false")
        return value.text == "true"
    raise RqlError(f"values cannot be compared with a {field_type.value} field")


def _json_text(value: Value) -> str:
    if value.kind == "number":
        return orjson.dumps(value.number).decode()
    if value.kind == "boolean":
        return value.text
    return orjson.dumps(value.text).decode()
