"""RQL: the parser, the SQL compiler, and property tests that run every generated query on PostgreSQL.

The property: each generated query either compiles to SQL that PostgreSQL executes, or is
rejected with RqlError, for which the API returns INVALID_RQL_EXCEPTION.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskservice.api.rql import Atom, Call, Group, RqlError, parse_query, parse_value
from taskservice.store.api_repository import ApiRepository
from taskservice.store.db import create_pool
from taskservice.store.resources import DISPATCHERS, TASKS
from taskservice.store.rql_sql import compile_query


def sdk_encode(value: str) -> str:
    """Encode a value twice as the official SDK's query builder does (RFC 3986, -_.!~*'() too)."""
    once = quote(value, safe="")
    once = "".join(f"%{ord(c):02X}" if c in "-_.!~*'()" else c for c in once)
    twice = quote(once, safe="")
    return "".join(f"%{ord(c):02X}" if c in "-_.!~*'()" else c for c in twice)


def compile_tasks(text: str) -> Any:
    return compile_query(parse_query(text), TASKS, default_limit=20, max_limit=50)


# Parser ------------------------------------------------------------------------------------


def test_parse_call_and_options() -> None:
    query = parse_query("eq(functionName,my%252Dfn)&limit(10,20)&sort(+creationTimestamp,-priority)&select(id,status)")
    assert query.filter == Call("eq", (Atom("functionName"), Atom("my%2Dfn")))
    assert query.filter.args[1].value().text == "my-fn"
    assert (query.limit, query.offset) == (10, 20)
    assert query.sort == [("creationTimestamp", False), ("priority", True)]
    assert query.select == ["id", "status"]
    assert query.skip_count is False


def test_parse_fiql_shorthand() -> None:
    for text, operator in (("status=new", "eq"), ("status==new", "eq"), ("status!=new", "ne"), ("priority>1", "gt"),
                           ("priority<1", "lt"), ("priority>=1", "ge"), ("priority<=1", "le"),
                           ("priority=gt=1", "gt"), ("status=in=(new,failed)", "in")):
        filter_ = parse_query(text).filter
        assert filter_ is not None and filter_.name == operator, text
    assert parse_query("status=in=(new,failed)").filter.args[1] == Group((Atom("new"), Atom("failed")))


def test_parse_groups_and_nesting() -> None:
    query = parse_query("(status=new|status=failed)&functionName=a")
    assert query.filter.name == "and"
    assert query.filter.args[0].name == "or"
    nested = parse_query("or(eq(a,1),and(b=2,c!=3))").filter
    assert [arg.name for arg in nested.args] == ["eq", "and"]
    contains = parse_query("contains(data.items,eq(name,x),gt(n,1))").filter
    assert contains.args[1] == Call("eq", (Atom("name"), Atom("x")))
    assert parse_query("skipCount()").skip_count
    assert parse_query("skip_count()").skip_count
    assert parse_query("").filter is None
    assert parse_query("?").filter is None


def test_parse_values() -> None:
    assert parse_value("12").number == 12
    assert parse_value("-1.5").number == -1.5
    assert parse_value("true").kind == "boolean"
    assert parse_value("null").kind == "null"
    assert parse_value("string:12").kind == "string"
    assert parse_value("string:12").text == "12"
    assert parse_value("2025-01-31T09:00:00.000Z").date == datetime(2025, 1, 31, 9, tzinfo=UTC)
    assert parse_value("epoch:0").date == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_value("a:b").text == "a:b"
    assert parse_value("1e400").kind == "number"
    with pytest.raises(RqlError):
        parse_value("number:abc")


def test_sdk_double_encoding_round_trip() -> None:
    for value in ("my-fn", "a,b(c)&d|e", "100%", "x+y z", "ünï©ødé", "2025-01-31T09:00:00.000Z", "'quoted'"):
        query = parse_query(f"eq(functionName,{sdk_encode(value)})")
        assert query.filter.args[1].value().text == value
    assert parse_query("sort(+priority)").sort == [("priority", False)]


@pytest.mark.parametrize("text", [
    "eq(a,1", "eq(a,1))", "nope(a)", "eq(a,1)&eq(b,2)|eq(c,3)", "limit(0)", "limit(-1)", "limit(1,2,3)",
    "limit(a)", "limit(5)&limit(6)", "sort()", "select()", "skipCount(1)", "or(limit(1))", "f!", "&", "(a=1",
    "eq(a,1)&", "=x", "%FF", "a=b=c", "eq(a,(1,2)", "x" * 20_000, "eq(a,%00)", "id=\x00",
])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(RqlError):
        parse_query(text)


def test_parse_rejects_deep_nesting() -> None:
    with pytest.raises(RqlError):
        parse_query("and(" * 40 + "eq(a,1)" + ")" * 40)


# Compiler ----------------------------------------------------------------------------------


def test_compile_uses_parameters_only() -> None:
    compiled = compile_tasks("eq(functionName,x'; DROP TABLE tasks; --)&like(status,%25_)&eq(data.a'b,1)")
    assert "DROP" not in compiled.where
    assert "a'b" not in compiled.where
    assert "x'; DROP TABLE tasks; --" in compiled.parameters
    assert "%\\%\\_%" in compiled.parameters
    assert ["a'b"] in compiled.parameters


@pytest.mark.parametrize("text", [
    "eq(unknown,1)", "eq(priority,abc)", "gt(tags,a)", "lt(creationTimestamp,soon)", "select(nope)", "sort(tags)",
    "eq(status)", "in(status)", "contains(status,eq(a,1))", "eq(data..x,1)", "gt(priority,null)",
    "like(priority,1)", "eq(eq(a,1),1)", "eq(status,(a,b))", "or()", "gt(status,eq(a,1))", "eq(status,%2500)",
])
def test_compile_rejects(text: str) -> None:
    with pytest.raises(RqlError):
        compile_tasks(text)


def test_compile_limits_and_order() -> None:
    compiled = compile_tasks("limit(500,10)&sort(-priority)")
    assert (compiled.limit, compiled.offset) == (50, 10)
    assert compiled.order == "priority DESC, id DESC"
    assert compile_tasks("").order == "creation_timestamp ASC, id ASC"
    assert compile_tasks("").limit == 20


# Property tests on PostgreSQL --------------------------------------------------------------


class _LoopThread:
    """An event loop in a thread, so synchronous hypothesis tests can await database calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def rql_database(database_url: str) -> Iterator[tuple[_LoopThread, ApiRepository]]:
    """A repository on the test database, with a few tasks and dispatchers, driven from a thread."""
    runner = _LoopThread()
    pool = runner.run(create_pool(database_url, size=2, role="rql-test"))
    runner.run(pool.execute(
        "INSERT INTO tasks (id, function_name, data, tags, priority, source, error) VALUES "
        "('aaaaaaaaaaaaaaaaaaaaaaaa', 'fn-a', '{\"n\": 1, \"s\": \"x\", \"items\": [{\"k\": 1}], \"t\": [1, 2]}', "
        "'{a,b}', 1, 'api', NULL), "
        "('bbbbbbbbbbbbbbbbbbbbbbbb', 'fn-b', '{\"n\": \"1\", \"nested\": {\"deep\": true}}', '{}', -3, 'api', "
        "'{\"type\": \"runtime\", \"name\": \"E\", \"message\": \"m\"}')"))
    runner.run(pool.execute("INSERT INTO dispatchers (id, event_type) VALUES ('cccccccccccccccccccccccc', 'x')"))
    try:
        yield runner, ApiRepository(pool)
    finally:
        runner.run(pool.close())
        runner.close()


FIELDS = [*TASKS.fields, "data.n", "data.s", "data.items", "data.nested.deep", "data.t", "error.name", "data",
          "unknown", "", "data.", "+priority", "-status"]
OPERATORS = ["eq", "ne", "gt", "ge", "lt", "le", "in", "out", "like", "contains", "excludes", "and", "or",
             "limit", "sort", "select", "skipCount", "nope"]
FIQL = ["=", "==", "!=", ">", "<", ">=", "<=", "=gt=", "=in=", "=like=", "=nope="]

values = st.one_of(
    st.sampled_from(["1", "-2.5", "true", "false", "null", "string:1", "number:3", "date:2025-01-01", "epoch:0",
                     "2025-01-31T09:00:00.000Z", "2025-13-45", "new", "fn-a", "a", "", "1e400", "boolean:x"]),
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
).map(lambda value: sdk_encode(value) if value and value[0] == "~" else value)
encoded_values = st.one_of(values, st.text(max_size=8).map(sdk_encode))


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    """An RQL term: a call, a FIQL comparison, a group, or noise."""
    kind = draw(st.integers(0, 9 if depth < 3 else 5))
    field = draw(st.sampled_from(FIELDS))
    if kind <= 2:
        operator = draw(st.sampled_from(OPERATORS[:9]))
        args = draw(st.lists(encoded_values, min_size=0, max_size=3))
        return f"{operator}({','.join([field, *args])})"
    if kind <= 4:
        return f"{field}{draw(st.sampled_from(FIQL))}{draw(encoded_values)}"
    if kind == 5:
        return draw(st.text(alphabet="(),&|=<>!abc%1", max_size=10))
    if kind <= 7:
        operator = draw(st.sampled_from(["and", "or"]))
        parts = draw(st.lists(expressions(depth + 1), min_size=0, max_size=3))
        return f"{operator}({','.join(parts)})"
    if kind == 8:
        operator = draw(st.sampled_from(["contains", "excludes"]))
        parts = draw(st.lists(expressions(depth + 1), min_size=0, max_size=2))
        return f"{operator}({','.join([field, *parts])})"
    separator = draw(st.sampled_from(["&", "|"]))
    return "(" + separator.join(draw(st.lists(expressions(depth + 1), min_size=1, max_size=3))) + ")"


options = st.sampled_from(["", "limit(5)", "limit(50,1)", "limit(0)", "sort(-priority,+creationTimestamp)",
                           "sort(data.n)", "sort(tags)", "select(id,status)", "skipCount()", "select(x)"])


@st.composite
def queries(draw: st.DrawFn) -> str:
    """A whole query string: terms joined by & or |, with options."""
    terms = draw(st.lists(expressions(), min_size=0, max_size=3))
    terms += [option for option in draw(st.lists(options, max_size=2)) if option]
    return draw(st.sampled_from(["&", "|"])).join(terms)


def _run_or_reject(runner: _LoopThread, repository: ApiRepository, text: str, resource: Any = TASKS) -> None:
    try:
        compiled = compile_query(parse_query(text), resource, default_limit=20, max_limit=50)
    except RqlError:
        return
    listing = repository.list_tasks if resource is TASKS else repository.list_dispatchers
    total, rows = runner.run(listing(compiled))
    assert total is None or total >= len(rows)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=queries())
def test_generated_queries_run_or_are_rejected(rql_database, text: str) -> None:
    runner, repository = rql_database
    _run_or_reject(runner, repository, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_arbitrary_text_runs_or_is_rejected(rql_database, text: str) -> None:
    runner, repository = rql_database
    _run_or_reject(runner, repository, quote(text, safe="(),&|=<>!+-.:"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=queries())
def test_generated_dispatcher_queries_run_or_are_rejected(rql_database, text: str) -> None:
    runner, repository = rql_database
    _run_or_reject(runner, repository, text.replace("functionName", "actions"), DISPATCHERS)


def test_json_semantics_on_postgres(rql_database) -> None:
    runner, repository = rql_database

    def ids(text: str) -> list[str]:
        compiled = compile_tasks(text)
        return [row["id"][0] for row in runner.run(repository.list_tasks(compiled))[1]]

    assert ids("eq(data.n,1)") == ["a"]
    assert ids("eq(data.n,string:1)") == ["b"]
    assert ids("eq(data.t,2)") == ["a"]
    assert ids("contains(data.items,eq(k,1))") == ["a"]
    assert ids("excludes(data.items,eq(k,1))") == ["b"]
    assert ids("eq(data.nested.deep,true)") == ["b"]
    assert ids("ne(data.s,x)") == ["b"]
    assert ids("eq(error.name,E)") == ["b"]
    assert ids("contains(tags)") == ["a"]
    assert ids("excludes(tags)") == ["b"]
    assert ids("like(data.s,X)") == ["a"]
    assert ids("in(priority,1,-3)&sort(priority)") == ["b", "a"]
    assert ids("eq(retriedByTaskId,null)") == ["a", "b"]
