"""Resource Query Language (RQL): parser from the raw query string to a syntax tree.

Grammar, after the raw query string is percent-decoded once:

    query       = "" | group
    group       = term { ("&" | "|") term }        one group uses one separator
    term        = "(" group ")" | call | comparison
    call        = NAME "(" [ argument { "," argument } ] ")"
    comparison  = NAME ( "=" | "==" | "!=" | ">" | "<" | ">=" | "<=" | "=" NAME "=" ) value
    argument    = call | "(" argument { "," argument } ")" | atom

Arguments of `and`, `or`, and of `contains` and `excludes` after the field, are terms, so
FIQL comparisons may appear there. An atom is any text up to `(`, `)`, `,`, `&` or `|`.

The official SDK percent-encodes each value twice (RFC 3986, so `-_.!~*'()` too), so a
value's own `(`, `,` or `&` are still encoded after the first decoding. Each atom is
decoded a second time when it is read as a value. `+` is never read as a space, because
`sort(+field)` arrives with a literal `+`.

Top-level `limit`, `sort`, `select` and `skipCount` (also `skip_count`) are options, also
inside a top-level `and(...)`; the other terms form the filter. The parser raises RqlError for any input it cannot read,
and nothing here builds SQL: `taskservice.store.rql_sql` compiles the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import unquote

MAX_QUERY_CHARS = 16_384
MAX_DEPTH = 32

COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
LIST_OPERATORS = ("in", "out")
LOGICAL = ("and", "or")
ARRAY_OPERATORS = ("contains", "excludes")
OPTIONS = ("limit", "sort", "select", "skipCount", "skip_count")
OPERATORS = frozenset((*COMPARISONS, *LIST_OPERATORS, "like", *LOGICAL, *ARRAY_OPERATORS, *OPTIONS))

_FIQL_OPERATORS = {"==": "eq", "=": "eq", "!=": "ne", ">=": "ge", "<=": "le", ">": "gt", "<": "lt"}
_NAMED_FIQL = re.compile(r"=([A-Za-z_]+)=")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_ATOM_STOP = frozenset("(),&|")
_NAME_STOP = frozenset("(),&|=<>!")


class RqlError(ValueError):
    """Raised when a query string is not valid RQL; the message names the position or term."""


ValueKind = Literal["string", "number", "boolean", "null", "date"]


@dataclass(frozen=True)
class Value:
    """A typed value: `text` is the fully decoded text, `number` and `date` are set by kind."""

    text: str
    kind: ValueKind
    number: int | float | None = None
    date: datetime | None = None
    forced_string: bool = False


@dataclass(frozen=True)
class Atom:
    """Text of one argument after the first decoding; field names and values are atoms."""

    raw: str

    def name(self) -> str:
        """Return the atom as a field name, decoded once more."""
        return decode(self.raw)

    def value(self) -> Value:
        """Return the atom as a typed value."""
        return parse_value(decode(self.raw))


@dataclass(frozen=True)
class Group:
    """A parenthesised list of arguments, such as the values of `in(f,(a,b))`."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Call:
    """An operator with its arguments; FIQL comparisons become calls too."""

    name: str
    args: tuple[Node, ...]


Node = Atom | Group | Call


@dataclass
class Query:
    """A parsed query: the filter tree and the paging and shape options."""

    filter: Call | None = None
    limit: int | None = None
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)   # (field, descending)
    select: list[str] | None = None
    skip_count: bool = False


def decode(text: str) -> str:
    """Percent-decode text once, strictly as UTF-8; `+` stays a plus sign.

    NUL is rejected, because PostgreSQL text cannot contain it (stored text has U+FFFD
    in its place).
    """
    try:
        decoded = unquote(text, errors="strict")
    except UnicodeDecodeError as exc:
        raise RqlError(f"percent-encoded bytes in {text!r} are not valid UTF-8") from exc
    if "\x00" in decoded:
        raise RqlError("RQL cannot contain the NUL character (%00)")
    return decoded


def parse_value(text: str) -> Value:
    """Type a decoded value: a converter prefix, then true, false, null, a number, an ISO date, else text."""
    if ":" in text and not _ISO_DATE.fullmatch(text):
        prefix, _, rest = text.partition(":")
        converted = _convert(prefix, rest)
        if converted is not None:
            return converted
    if text in ("true", "false"):
        return Value(text, "boolean")
    if text == "null":
        return Value(text, "null")
    if _NUMBER.fullmatch(text):
        number = float(text)
        return Value(text, "number", number=int(number) if number.is_integer() and abs(number) < 2**63 else number)
    if _ISO_DATE.fullmatch(text):
        return Value(text, "date", date=_parse_date(text))
    return Value(text, "string")


def _convert(prefix: str, rest: str) -> Value | None:
    if prefix == "string":
        return Value(rest, "string", forced_string=True)
    if prefix == "number":
        if not _NUMBER.fullmatch(rest):
            raise RqlError(f"number:{rest} is not a number")
        return parse_value(rest)
    if prefix == "boolean":
        if rest not in ("true", "false"):
            raise RqlError(f"boolean:{rest} must be boolean:true or boolean:false")
        return Value(rest, "boolean")
    if prefix in ("date", "isodate"):
        if not _ISO_DATE.fullmatch(rest):
            raise RqlError(f"{prefix}:{rest} is not an ISO-8601 date such as 2025-01-31T09:00:00.000Z")
        return Value(rest, "date", date=_parse_date(rest))
    if prefix == "epoch":
        if not re.fullmatch(r"-?[0-9]{1,15}", rest):
            raise RqlError(f"epoch:{rest} must be whole milliseconds since 1970")
        return Value(rest, "date", date=datetime.fromtimestamp(int(rest) / 1000, UTC))
    # Any other prefix is part of an ordinary string value such as "a:b".
    return None


def _parse_date(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RqlError(f"{text!r} is not a valid date") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_query(raw_query: str) -> Query:
    """Parse the raw (still percent-encoded) query string of a request into a Query."""
    if len(raw_query) > MAX_QUERY_CHARS:
        raise RqlError(f"the query has {len(raw_query)} characters, more than {MAX_QUERY_CHARS}")
    text = decode(raw_query)
    if text.startswith("?"):
        text = text[1:]
    query = Query()
    if not text:
        return query
    root = _Parser(text).parse()
    terms = list(root.args) if root.name == "and" else [root]
    filters: list[Node] = []
    for term in terms:
        if isinstance(term, Call) and term.name in OPTIONS:
            _apply_option(query, term)
        else:
            filters.append(term)
    _check_no_nested_options(filters)
    if len(filters) == 1 and isinstance(filters[0], Call):
        query.filter = filters[0]
    elif filters:
        query.filter = Call("and", tuple(filters))
    return query


def _check_no_nested_options(nodes: list[Node]) -> None:
    for node in nodes:
        if isinstance(node, Call):
            if node.name in OPTIONS:
                raise RqlError(f"{node.name}() is only allowed at the top level of the query")
            _check_no_nested_options(list(node.args))
        elif isinstance(node, Group):
            _check_no_nested_options(list(node.items))


def _apply_option(query: Query, call: Call) -> None:
    name = "skipCount" if call.name == "skip_count" else call.name
    if name == "skipCount":
        if call.args:
            raise RqlError("skipCount() takes no arguments")
        query.skip_count = True
        return
    atoms = [_atom(arg, name) for arg in call.args]
    if name == "limit":
        if query.limit is not None:
            raise RqlError("limit() appears more than once")
        if not 1 <= len(atoms) <= 2:
            raise RqlError("limit() takes a count and an optional offset, e.g. limit(20,40)")
        query.limit = _integer(atoms[0], "limit count", minimum=1)
        query.offset = _integer(atoms[1], "limit offset", minimum=0) if len(atoms) == 2 else 0
    elif name == "sort":
        if query.sort:
            raise RqlError("sort() appears more than once")
        if not atoms:
            raise RqlError("sort() needs at least one field, e.g. sort(-creationTimestamp)")
        for atom in atoms:
            text = atom.name()
            descending = text.startswith("-")
            query.sort.append((text.lstrip("+-"), descending))
    elif name == "select":
        if query.select is not None:
            raise RqlError("select() appears more than once")
        if not atoms:
            raise RqlError("select() needs at least one field")
        query.select = [atom.name() for atom in atoms]


def _atom(node: Node, operator: str) -> Atom:
    if not isinstance(node, Atom):
        raise RqlError(f"{operator}() takes plain field names or numbers as arguments")
    return node


def _integer(atom: Atom, what: str, *, minimum: int) -> int:
    text = atom.name()
    if not re.fullmatch(r"[0-9]{1,12}", text) or int(text) < minimum:
        raise RqlError(f"{what} must be a whole number of at least {minimum} (got {text!r})")
    return int(text)


class _Parser:
    """Recursive-descent parser over the once-decoded query text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.depth = 0

    def parse(self) -> Call:
        node = self._group()
        if self.position != len(self.text):
            self._fail(f"unexpected {self.text[self.position]!r}")
        if not isinstance(node, Call):
            self._fail("expected an operator such as eq(field,value)")
        return node

    def _fail(self, message: str) -> None:
        raise RqlError(f"invalid RQL at character {self.position + 1}: {message}")

    def _peek(self) -> str:
        return self.text[self.position] if self.position < len(self.text) else ""

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self._fail(f"the query nests deeper than {MAX_DEPTH} levels")

    def _group(self) -> Node:
        terms = [self._term()]
        separator = ""
        while self._peek() in ("&", "|") and self._peek():
            current = self._peek()
            if separator and current != separator:
                self._fail("'&' and '|' cannot be mixed in one group; wrap one side in and(), or() or parentheses")
            separator = current
            self.position += 1
            terms.append(self._term())
        if len(terms) == 1:
            return terms[0]
        return Call("and" if separator == "&" else "or", tuple(terms))

    def _term(self) -> Node:
        self._enter()
        try:
            if self._peek() == "(":
                self.position += 1
                node = self._group()
                self._expect(")")
                return node
            start = self.position
            name = self._read(_NAME_STOP)
            if not name:
                self._fail("expected an operator or a field name")
            if self._peek() == "(":
                self.position += 1
                return self._call(name)
            if self._peek() and self._peek() in "=<>!":
                operator = self._comparator()
                return Call(operator, (Atom(name), self._fiql_value()))
            self.position = start
            self._fail(f"{name!r} is neither an operator call nor a comparison")
            raise AssertionError  # unreachable: _fail raises
        finally:
            self.depth -= 1

    def _call(self, name: str) -> Call:
        if name not in OPERATORS:
            raise RqlError(f"unsupported RQL operator {name!r}; supported: {', '.join(sorted(OPERATORS))}")
        if name in LOGICAL:
            return Call(name, self._arguments(lambda index: True))
        if name in ARRAY_OPERATORS:
            return Call(name, self._arguments(lambda index: index > 0))
        return Call(name, self._arguments(lambda index: False))

    def _arguments(self, is_term: object) -> tuple[Node, ...]:
        items: list[Node] = []
        if self._peek() == ")":
            self.position += 1
            return ()
        while True:
            items.append(self._term() if is_term(len(items)) else self._argument())  # type: ignore[operator]
            if self._peek() == ",":
                self.position += 1
                continue
            if self._peek() == ")":
                self.position += 1
                return tuple(items)
            self._fail("expected ',' or ')'")

    def _argument(self) -> Node:
        self._enter()
        try:
            if self._peek() == "(":
                self.position += 1
                return Group(self._arguments(lambda index: False))
            text = self._read(_ATOM_STOP)
            if self._peek() == "(":
                self.position += 1
                return self._call(text)
            return Atom(text)
        finally:
            self.depth -= 1

    def _comparator(self) -> str:
        named = _NAMED_FIQL.match(self.text, self.position)
        if named and named.group(1) in OPERATORS:
            self.position = named.end()
            return named.group(1)
        if named:
            self._fail(f"unsupported RQL operator {named.group(1)!r}")
        for symbol in ("==", "!=", ">=", "<=", "=", ">", "<"):
            if self.text.startswith(symbol, self.position):
                self.position += len(symbol)
                return _FIQL_OPERATORS[symbol]
        self._fail("expected a comparison such as =, !=, >= or =in=")
        raise AssertionError  # unreachable: _fail raises

    def _fiql_value(self) -> Node:
        if self._peek() == "(":
            self.position += 1
            return Group(self._arguments(lambda index: False))
        return Atom(self._read(_ATOM_STOP))

    def _read(self, stop: frozenset[str]) -> str:
        start = self.position
        while self.position < len(self.text) and self.text[self.position] not in stop:
            self.position += 1
        return self.text[start:self.position]

    def _expect(self, character: str) -> None:
        if self._peek() != character:
            self._fail(f"expected {character!r}")
        self.position += 1


def simple_terms(node: Call | None) -> list[tuple[str, str, Value]]:
    """Return the (operator, field, value) comparisons of a filter that is one or an and() of them.

    Log endpoints accept only such filters; anything else raises RqlError.
    """
    if node is None:
        return []
    terms = list(node.args) if node.name == "and" else [node]
    found: list[tuple[str, str, Value]] = []
    for term in terms:
        if (not isinstance(term, Call) or term.name not in COMPARISONS or len(term.args) != 2
                or not isinstance(term.args[0], Atom) or not isinstance(term.args[1], Atom)):
            raise RqlError("only comparisons such as ge(timestamp,2025-01-01T00:00:00.000Z) are accepted here")
        found.append((term.name, term.args[0].name(), term.args[1].value()))
    return found
