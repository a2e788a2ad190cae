"""Tests of the replacement of NUL and lone surrogates with U+FFFD in results, log lines and error messages."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.runtime_functions.support import make_spec, make_tasks
from taskservice.functions import RuntimePool
from taskservice.functions.storable_text import dumps_storable, make_storable

pytestmark = pytest.mark.timeout(30)

LONE_SURROGATES = [0xD800, 0xDBFF, 0xDC00, 0xDFFF]
NUL = 0
EMOJI = 0x1F600


@pytest.fixture
async def pool():
    runtime_pool = RuntimePool()
    yield runtime_pool
    await runtime_pool.close()


async def run_text_case(pool, place: str, code_point: int):
    (outcome,) = await pool.run_batch(
        make_spec("handlers.unstorable_text"), make_tasks({"place": place, "code_point": code_point})
    )
    return outcome


def log_texts(outcome) -> list[str]:
    return [line.split("\t", 3)[3] for _, line in outcome.logs]


@pytest.mark.parametrize("code_point", [*LONE_SURROGATES, NUL])
async def test_result_string_replaced(pool, code_point):
    outcome = await run_text_case(pool, "result", code_point)

    assert outcome.ok, outcome.error
    assert outcome.result == "a\ufffdb"


@pytest.mark.parametrize("code_point", [0xD800, NUL])
async def test_nested_result_replaced(pool, code_point):
    outcome = await run_text_case(pool, "nested", code_point)

    assert outcome.ok, outcome.error
    assert outcome.result == {"list": ["a\ufffdb", ["a\ufffdb", {"inner": "a\ufffdb"}]]}


@pytest.mark.parametrize("code_point", [0xDFFF, NUL])
async def test_dict_key_replaced(pool, code_point):
    outcome = await run_text_case(pool, "key", code_point)

    assert outcome.ok, outcome.error
    assert outcome.result == {"a\ufffdb": 1}


@pytest.mark.parametrize("code_point", [0xD800, NUL])
async def test_printed_line_replaced(pool, code_point):
    outcome = await run_text_case(pool, "print", code_point)

    assert outcome.ok, outcome.error
    assert log_texts(outcome) == ["a\ufffdb"]


@pytest.mark.parametrize("code_point", [0xDC00, NUL])
async def test_logging_message_replaced(pool, code_point):
    outcome = await run_text_case(pool, "logging", code_point)

    assert outcome.ok, outcome.error
    assert log_texts(outcome) == ["message a\ufffdb"]


@pytest.mark.parametrize("code_point", [0xD800, NUL])
async def test_error_message_replaced(pool, code_point):
    outcome = await run_text_case(pool, "error", code_point)

    assert outcome.error == {"type": "runtime", "name": "ValueError", "message": "a\ufffdb"}
    assert log_texts(outcome)[-1].endswith("ValueError: a\ufffdb")


async def test_raw_output_of_crashed_worker_replaced(pool):
    outcome = await run_text_case(pool, "raw_output_then_exit", NUL)

    assert outcome.error["name"] == "Runtime.ExitError"
    assert "a\ufffdb" in log_texts(outcome)


@pytest.mark.parametrize("place", ["result", "key", "print", "logging"])
async def test_emoji_unchanged(pool, place):
    outcome = await run_text_case(pool, place, EMOJI)

    assert outcome.ok, outcome.error
    if place == "result":
        assert outcome.result == "a\U0001f600b"
    elif place == "key":
        assert outcome.result == {"a\U0001f600b": 1}
    else:
        assert log_texts(outcome)[0].endswith("a\U0001f600b")


@pytest.mark.parametrize(
    ("place", "expected_text"),
    [("set_next_to_text", "set"), ("int_key_next_to_text", "Dict key must be str")],
)
async def test_non_json_result_next_to_surrogate_invalid(pool, place, expected_text):
    outcome = await run_text_case(pool, place, 0xD800)

    assert outcome.error["name"] == "Runtime.InvalidResult"
    assert expected_text in outcome.error["message"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("a\x00b", "a\ufffdb"),
        ("\ud800\udc00", "\ufffd\ufffd"),
        ("é\udfff", "é\ufffd"),
        ("\U0001f600", "\U0001f600"),
        ("\\u0000", "\\u0000"),
    ],
)
def test_make_storable(text, expected):
    assert make_storable(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\x00b", "a\ufffdb"),
        ("\\u0000", "\\u0000"),
        ("\\\x00", "\\\ufffd"),
        ({"k\x00": ["\ud800", ("x",)]}, {"k\ufffd": ["\ufffd", ["x"]]}),
        (float("nan"), None),
    ],
)
def test_dumps_storable(value, expected):
    assert orjson.loads(dumps_storable(value)) == expected


def test_dumps_storable_keeps_fast_result_identical():
    value = {"text": "ascii and é", "numbers": [1, 2.5], "nested": {"flag": True}}

    assert dumps_storable(value) == orjson.dumps(value)


def test_dumps_storable_rejects_deep_nesting():
    value: list = []
    for _ in range(2000):
        value = [value, "\ud800"]

    with pytest.raises(orjson.JSONEncodeError, match="Recursion limit"):
        dumps_storable(value)
