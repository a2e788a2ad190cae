"""Event patterns of dispatcher filters: matching, validation and the index."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskservice.consumers import pattern_index
from taskservice.consumers.patterns import (MAX_DEPTH, MAX_MATCHERS, Pattern, PatternError, PatternIndex,
                                            compile_pattern)

BP = {"specversion": "1.0", "id": "c1", "source": "/data/v1/bp", "type": "document.transitioned",
      "data": {"schemaId": "s-bp", "schemaName": "blood-pressure", "documentId": "d1", "userId": "u1",
               "fromStatus": "new", "toStatus": "analyzed", "data": {"systolic": 141, "diastolic": 92.5}}}

# (case id, pattern, event, expected)
MATCH_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # exact values
    ("string equal", {"a": ["x"]}, {"a": "x"}, True),
    ("string differs", {"a": ["x"]}, {"a": "y"}, False),
    ("string is case sensitive", {"a": ["x"]}, {"a": "X"}, False),
    ("any of several values", {"a": ["x", "y"]}, {"a": "y"}, True),
    ("empty string", {"a": [""]}, {"a": ""}, True),
    ("empty string is not null", {"a": [""]}, {"a": None}, False),
    ("null", {"a": [None]}, {"a": None}, True),
    ("null is not missing", {"a": [None]}, {}, False),
    ("null is not empty string", {"a": [None]}, {"a": ""}, False),
    ("int equals float", {"a": [5]}, {"a": 5.0}, True),
    ("float equals int", {"a": [5.0]}, {"a": 5}, True),
    ("number is not string", {"a": [5]}, {"a": "5"}, False),
    ("string is not number", {"a": ["5"]}, {"a": 5}, False),
    ("decimal fraction", {"a": [0.1]}, {"a": 0.1}, True),
    ("negative zero", {"a": [0]}, {"a": -0.0}, True),
    ("large ints compare exactly", {"a": [9007199254740993]}, {"a": 9007199254740992}, False),
    ("large int equal", {"a": [9007199254740993]}, {"a": 9007199254740993}, True),
    ("true", {"a": [True]}, {"a": True}, True),
    ("true is not 1", {"a": [True]}, {"a": 1}, False),
    ("1 is not true", {"a": [1]}, {"a": True}, False),
    ("0 is not false", {"a": [0]}, {"a": False}, False),
    ("false", {"a": [False]}, {"a": False}, True),
    ("unicode value", {"a": ["Ärzte ✓"]}, {"a": "Ärzte ✓"}, True),
    ("unicode key", {"größe": ["L"]}, {"größe": "L"}, True),
    # structure
    ("missing field", {"a": ["x"]}, {"b": "x"}, False),
    ("all fields must match", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}, False),
    ("all fields match", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "y", "c": 1}, True),
    ("nested object", {"data": {"toStatus": ["analyzed"]}}, BP, True),
    ("deeply nested", {"data": {"data": {"systolic": [141]}}}, BP, True),
    ("nested object missing", {"data": {"toStatus": ["analyzed"]}}, {"type": "x"}, False),
    ("object in event for a leaf", {"data": ["x"]}, {"data": {"x": 1}}, False),
    ("scalar in event for an object", {"a": {"b": ["x"]}}, {"a": "x"}, False),
    # arrays in the event
    ("array contains value", {"a": ["x"]}, {"a": ["y", "x"]}, True),
    ("array lacks value", {"a": ["x"]}, {"a": ["y", "z"]}, False),
    ("empty array", {"a": ["x"]}, {"a": []}, False),
    ("nested array", {"a": ["x"]}, {"a": [["y"], ["x"]]}, True),
    ("array of objects", {"a": {"b": ["x"]}}, {"a": [{"b": "y"}, {"b": "x"}]}, True),
    ("array of objects, none", {"a": {"b": ["x"]}}, {"a": [{"b": "y"}, {"c": "x"}]}, False),
    ("fields from one element", {"a": {"b": ["1"], "c": ["2"]}}, {"a": [{"b": "1", "c": "3"}, {"b": "3", "c": "2"}]},
     False),
    ("fields from same element", {"a": {"b": ["1"], "c": ["2"]}}, {"a": [{"b": "3"}, {"b": "1", "c": "2"}]}, True),
    ("array of arrays of objects", {"a": {"b": ["x"]}}, {"a": [[{"b": "x"}]]}, True),
    ("array inside array element", {"a": {"b": ["x"]}}, {"a": [{"b": ["y", "x"]}]}, True),
    # prefix and suffix
    ("prefix", {"a": [{"prefix": "bl"}]}, {"a": "blood"}, True),
    ("prefix misses", {"a": [{"prefix": "bl"}]}, {"a": "ablood"}, False),
    ("prefix equal", {"a": [{"prefix": "blood"}]}, {"a": "blood"}, True),
    ("prefix on number", {"a": [{"prefix": "1"}]}, {"a": 12}, False),
    ("prefix in array", {"a": [{"prefix": "bl"}]}, {"a": ["x", "blue"]}, True),
    ("empty prefix matches strings", {"a": [{"prefix": ""}]}, {"a": "anything"}, True),
    ("prefix ignore case", {"a": [{"prefix": {"equals-ignore-case": "BL"}}]}, {"a": "bLood"}, True),
    ("prefix ignore case misses", {"a": [{"prefix": {"equals-ignore-case": "BL"}}]}, {"a": "ablood"}, False),
    ("suffix", {"a": [{"suffix": ".png"}]}, {"a": "x.png"}, True),
    ("suffix misses", {"a": [{"suffix": ".png"}]}, {"a": "x.PNG"}, False),
    ("suffix ignore case", {"a": [{"suffix": {"equals-ignore-case": ".png"}}]}, {"a": "x.PNG"}, True),
    ("suffix on null", {"a": [{"suffix": "l"}]}, {"a": None}, False),
    # equals-ignore-case
    ("ignore case", {"a": [{"equals-ignore-case": "Analyzed"}]}, {"a": "ANALYZED"}, True),
    ("ignore case differs", {"a": [{"equals-ignore-case": "Analyzed"}]}, {"a": "analyze"}, False),
    ("ignore case unicode", {"a": [{"equals-ignore-case": "ärzte"}]}, {"a": "ÄRZTE"}, True),
    ("ignore case folds sharp s", {"a": [{"equals-ignore-case": "straße"}]}, {"a": "STRASSE"}, True),
    ("ignore case on number", {"a": [{"equals-ignore-case": "5"}]}, {"a": 5}, False),
    # anything-but
    ("anything-but other string", {"a": [{"anything-but": "x"}]}, {"a": "y"}, True),
    ("anything-but same string", {"a": [{"anything-but": "x"}]}, {"a": "x"}, False),
    ("anything-but string, number", {"a": [{"anything-but": "x"}]}, {"a": 5}, True),
    ("anything-but string, null", {"a": [{"anything-but": "x"}]}, {"a": None}, True),
    ("anything-but string, true", {"a": [{"anything-but": "x"}]}, {"a": True}, True),
    ("anything-but missing field", {"a": [{"anything-but": "x"}]}, {}, False),
    ("anything-but object value", {"a": [{"anything-but": "x"}]}, {"a": {"b": 1}}, False),
    ("anything-but list", {"a": [{"anything-but": ["x", "y"]}]}, {"a": "y"}, False),
    ("anything-but list other", {"a": [{"anything-but": ["x", "y"]}]}, {"a": "z"}, True),
    ("anything-but number", {"a": [{"anything-but": 100}]}, {"a": 100.0}, False),
    ("anything-but numbers", {"a": [{"anything-but": [100, 200]}]}, {"a": 150}, True),
    ("anything-but number, string", {"a": [{"anything-but": [100]}]}, {"a": "100"}, True),
    ("anything-but array, one other", {"a": [{"anything-but": "x"}]}, {"a": ["x", "y"]}, True),
    ("anything-but array, all excluded", {"a": [{"anything-but": "x"}]}, {"a": ["x", "x"]}, False),
    ("anything-but empty array", {"a": [{"anything-but": "x"}]}, {"a": []}, False),
    ("anything-but prefix", {"a": [{"anything-but": {"prefix": "init"}}]}, {"a": "running"}, True),
    ("anything-but prefix excluded", {"a": [{"anything-but": {"prefix": "init"}}]}, {"a": "initializing"}, False),
    ("anything-but prefix, number", {"a": [{"anything-but": {"prefix": "1"}}]}, {"a": 12}, True),
    ("anything-but suffix", {"a": [{"anything-but": {"suffix": ".png"}}]}, {"a": "x.png"}, False),
    ("anything-but ignore case", {"a": [{"anything-but": {"equals-ignore-case": ["New", "open"]}}]}, {"a": "NEW"},
     False),
    ("anything-but ignore case other", {"a": [{"anything-but": {"equals-ignore-case": "New"}}]}, {"a": "old"}, True),
    ("anything-but wildcard", {"a": [{"anything-but": {"wildcard": "*/lib/*"}}]}, {"a": "/usr/lib/x"}, False),
    ("anything-but wildcard other", {"a": [{"anything-but": {"wildcard": ["*/lib/*", "*.tmp"]}}]}, {"a": "/usr/x"},
     True),
    ("anything-but wildcard list", {"a": [{"anything-but": {"wildcard": ["*/lib/*", "*.tmp"]}}]}, {"a": "a.tmp"},
     False),
    # numeric
    ("numeric range", {"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 5}, True),
    ("numeric exclusive lower", {"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 0}, False),
    ("numeric above", {"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 5.000001}, False),
    ("numeric inclusive lower", {"a": [{"numeric": [">=", 0, "<", 5]}]}, {"a": 0}, True),
    ("numeric exclusive upper", {"a": [{"numeric": [">=", 0, "<", 5]}]}, {"a": 5}, False),
    ("numeric point range", {"a": [{"numeric": [">=", 2, "<=", 2]}]}, {"a": 2.0}, True),
    ("numeric less", {"a": [{"numeric": ["<", -1.5]}]}, {"a": -2}, True),
    ("numeric at most", {"a": [{"numeric": ["<=", -1.5]}]}, {"a": -1.5}, True),
    ("numeric at least", {"a": [{"numeric": [">=", 140]}]}, BP | {"a": 139.99}, False),
    ("numeric greater", {"data": {"data": {"systolic": [{"numeric": [">", 140]}]}}}, BP, True),
    ("numeric equal", {"a": [{"numeric": ["=", 3]}]}, {"a": 3.0}, True),
    ("numeric equal misses", {"a": [{"numeric": ["=", 3]}]}, {"a": 3.0000001}, False),
    ("numeric tiny fraction", {"a": [{"numeric": [">", 0.1]}]}, {"a": 0.1000000001}, True),
    ("numeric beyond 5e9", {"a": [{"numeric": [">", 1.7e12]}]}, {"a": 1_700_000_000_001}, True),
    ("numeric on string", {"a": [{"numeric": [">", 0]}]}, {"a": "5"}, False),
    ("numeric on true", {"a": [{"numeric": [">", 0]}]}, {"a": True}, False),
    ("numeric in array", {"a": [{"numeric": [">", 10]}]}, {"a": [1, 20]}, True),
    # exists
    ("exists present", {"a": [{"exists": True}]}, {"a": "x"}, True),
    ("exists empty string", {"a": [{"exists": True}]}, {"a": ""}, True),
    ("exists null", {"a": [{"exists": True}]}, {"a": None}, True),
    ("exists missing", {"a": [{"exists": True}]}, {}, False),
    ("exists on object", {"a": [{"exists": True}]}, {"a": {"b": 1}}, False),
    ("exists on array", {"a": [{"exists": True}]}, {"a": [1]}, True),
    ("exists on empty array", {"a": [{"exists": True}]}, {"a": []}, False),
    ("exists on array of objects", {"a": [{"exists": True}]}, {"a": [{"b": 1}]}, False),
    ("not exists missing", {"a": [{"exists": False}]}, {"b": 1}, True),
    ("not exists present", {"a": [{"exists": False}]}, {"a": "x"}, False),
    ("not exists null", {"a": [{"exists": False}]}, {"a": None}, False),
    ("not exists on object", {"a": [{"exists": False}]}, {"a": {"b": 1}}, True),
    ("not exists on empty array", {"a": [{"exists": False}]}, {"a": []}, True),
    ("not exists on array", {"a": [{"exists": False}]}, {"a": [1]}, False),
    ("not exists, parent missing", {"a": {"b": [{"exists": False}]}}, {}, True),
    ("not exists, parent scalar", {"a": {"b": [{"exists": False}]}}, {"a": 5}, True),
    ("not exists, parent empty array", {"a": {"b": [{"exists": False}]}}, {"a": []}, True),
    ("not exists, per element", {"a": {"b": [{"exists": False}]}}, {"a": [{"b": 1}, {"c": 2}]}, True),
    ("not exists, all elements have it", {"a": {"b": [{"exists": False}]}}, {"a": [{"b": 1}]}, False),
    ("exists nested", {"data": {"userId": [{"exists": True}]}}, BP, True),
    ("missing or value", {"a": [{"exists": False}, "x"]}, {"a": "x"}, True),
    ("missing or value, missing", {"a": [{"exists": False}, "x"]}, {}, True),
    ("missing or value, other", {"a": [{"exists": False}, "x"]}, {"a": "y"}, False),
    # wildcard
    ("wildcard suffix", {"a": [{"wildcard": "*.png"}]}, {"a": "dir/x.png"}, True),
    ("wildcard middle", {"a": [{"wildcard": "dir/*/x*.png"}]}, {"a": "dir/a/b/x1.png"}, True),
    ("wildcard middle misses", {"a": [{"wildcard": "dir/*/x*.png"}]}, {"a": "dir/x1.png"}, False),
    ("wildcard star matches empty", {"a": [{"wildcard": "a*b"}]}, {"a": "ab"}, True),
    ("wildcard no overlap", {"a": [{"wildcard": "ab*ba"}]}, {"a": "aba"}, False),
    ("wildcard repeated segment", {"a": [{"wildcard": "*a*a*a*b"}]}, {"a": "a" * 50}, False),
    ("wildcard only star", {"a": [{"wildcard": "*"}]}, {"a": ""}, True),
    ("wildcard only star, number", {"a": [{"wildcard": "*"}]}, {"a": 1}, False),
    ("wildcard without star", {"a": [{"wildcard": "abc"}]}, {"a": "abc"}, True),
    ("wildcard escaped star", {"a": [{"wildcard": "a\\*b"}]}, {"a": "a*b"}, True),
    ("wildcard escaped star is literal", {"a": [{"wildcard": "a\\*b"}]}, {"a": "axb"}, False),
    ("wildcard escaped backslash", {"a": [{"wildcard": "a\\\\*"}]}, {"a": "a\\b"}, True),
    ("wildcard unicode", {"a": [{"wildcard": "ü*ß"}]}, {"a": "ü-ß"}, True),
    # cidr
    ("cidr inside", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.255"}, True),
    ("cidr outside", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.0"}, False),
    ("cidr ipv6", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8:1::5"}, True),
    ("cidr other family", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "10.0.0.1"}, False),
    ("cidr not an address", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.x"}, False),
    ("cidr on number", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": 167772161}, False),
    ("cidr host bits", {"ip": [{"cidr": "10.0.0.7/24"}]}, {"ip": "10.0.0.9"}, True),
    ("cidr single address", {"ip": [{"cidr": "10.0.0.7"}]}, {"ip": "10.0.0.7"}, True),
    # several matchers in one array
    ("mixed leaf string", {"a": ["x", {"prefix": "b"}, {"numeric": [">", 10]}]}, {"a": "bz"}, True),
    ("mixed leaf number", {"a": ["x", {"prefix": "b"}, {"numeric": [">", 10]}]}, {"a": 11}, True),
    ("mixed leaf none", {"a": ["x", {"prefix": "b"}, {"numeric": [">", 10]}]}, {"a": 9}, False),
    # $or
    ("or first", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "x"}, True),
    ("or second", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
    ("or none", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "y", "b": "x"}, False),
    ("or with field", {"t": ["d"], "$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"t": "e", "a": "x"}, False),
    ("or nested", {"data": {"$or": [{"toStatus": ["analyzed"]}, {"fromStatus": ["analyzed"]}]}}, BP, True),
    ("or in or", {"$or": [{"a": ["x"]}, {"b": ["y"], "$or": [{"c": [1]}, {"d": [2]}]}]}, {"b": "y", "d": 2}, True),
    ("or in or misses", {"$or": [{"a": ["x"]}, {"b": ["y"], "$or": [{"c": [1]}, {"d": [2]}]}]}, {"b": "y", "d": 3},
     False),
    ("parallel or", {"$or": [{"a": ["x"]}, {"b": ["y"]}], "n": {"$or": [{"c": [1]}, {"d": [2]}]}},
     {"b": "y", "n": {"d": 2}}, True),
    ("or in array element", {"a": {"$or": [{"b": ["x"]}, {"c": ["y"]}]}}, {"a": [{"b": "z"}, {"c": "y"}]}, True),
    ("or with not exists", {"$or": [{"a": [{"exists": False}]}, {"a": ["x"]}]}, {}, True),
    # a realistic filter
    ("bp analyzed", {"type": ["document.transitioned"],
                     "data": {"schemaName": ["blood-pressure"], "toStatus": ["analyzed"]}}, BP, True),
    ("bp other status", {"type": ["document.transitioned"],
                         "data": {"schemaName": ["blood-pressure"], "toStatus": ["new"]}}, BP, False),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), [case[1:] for case in MATCH_CASES],
                         ids=[case[0] for case in MATCH_CASES])
def test_pattern_matches(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.matches(event) is expected
    index = PatternIndex([("only", compiled)])
    assert index.match(event) == (["only"] if expected else [])


# (pattern, fragment of the message)
ERROR_CASES: list[tuple[object, str]] = [
    ([{"a": ["x"]}], 'filter: a pattern must be a JSON object, got [{"a": ["x"]}]'),
    ("status", 'filter: a pattern must be a JSON object, got "status"'),
    (None, "filter: a pattern must be a JSON object, got null"),
    ({}, "filter: the pattern is empty; leave the filter out to match every event"),
    ({"data": {}}, "filter.data: the object is empty"),
    ({"data": {"status": "analyzed"}}, 'filter.data.status: a field needs an array of matchers or a nested object, '
                                       'got "analyzed"; write ["analyzed"]'),
    ({"data": {"status": 5}}, "write [5]"),
    ({"data": {"prefix": "bl"}}, 'filter.data: "prefix" is an operator, so it goes in the array of a field; '
                                 'write "field": [{"prefix": "bl"}]'),
    ({"data": {"status": []}}, "filter.data.status: the array of matchers is empty, so it never matches"),
    ({"a": [["x", "y"]]}, "filter.a[0]: a matcher must be a string, a number, true, false, null or an operator "
                          'object, got ["x", "y"]'),
    ({"a": [float("nan")]}, "filter.a[0]: numbers must be finite, got NaN"),
    ({"a": [float("inf")]}, "numbers must be finite, got Infinity"),
    ({"a": [("x",)]}, "filter.a[0]: a matcher must be"),
    ({"a": [{"prefix": "a", "suffix": "b"}]}, 'filter.a[0]: an operator object needs exactly one key, got '
                                              '{"prefix": "a", "suffix": "b"}'),
    ({"a": [{}]}, "filter.a[0]: an operator object needs exactly one key, got {}"),
    ({"a": [{"prefx": "a"}]}, 'filter.a[0]: unknown operator "prefx"; write "prefix"'),
    ({"a": [{"contains": "a"}]}, 'unknown operator "contains"; use one of anything-but, cidr, equals-ignore-case'),
    ({"data": {"status": ["x", {"prefix": 5}]}},
     'filter.data.status[1]: "prefix" needs a string, got 5; write {"prefix": "abc"}'),
    ({"a": [{"prefix": {"ignore-case": "x"}}]}, '"prefix" takes only "equals-ignore-case" as a nested operator'),
    ({"a": [{"prefix": {"equals-ignore-case": 5}}]}, 'filter.a[0].prefix: "equals-ignore-case" needs a string, got 5'),
    ({"a": [{"suffix": [".png"]}]}, '"suffix" needs a string, got [".png"]; write {"suffix": "abc"}'),
    ({"a": [{"equals-ignore-case": ["x"]}]}, '"equals-ignore-case" needs a string, got ["x"]'),
    ({"a": [{"exists": "true"}]}, 'filter.a[0]: "exists" needs true or false, got "true"; write {"exists": true}'),
    ({"a": [{"exists": 1}]}, '"exists" needs true or false, got 1'),
    ({"a": [{"wildcard": 5}]}, '"wildcard" needs a string, got 5; write {"wildcard": "*.png"}'),
    ({"a": [{"wildcard": "a**b"}]}, '"wildcard" has consecutive * at position 1 of "a**b"; use a single *'),
    ({"a": [{"wildcard": "a\\b"}]}, '"wildcard" has an invalid escape at position 1'),
    ({"a": [{"wildcard": "ab\\"}]}, '"wildcard" has an invalid escape at position 2'),
    ({"a": [{"cidr": "10.0.0.0/33"}]}, 'filter.a[0]: "cidr" needs an IP network such as "10.0.0.0/24"'),
    ({"a": [{"cidr": "host"}]}, 'got "host"'),
    ({"a": [{"cidr": 10}]}, '"cidr" needs a string, got 10'),
    ({"a": [{"numeric": 5}]}, '"numeric" needs one or two comparisons, got 5; write [">", 0, "<=", 5]'),
    ({"a": [{"numeric": [">", 0, "<"]}]}, '"numeric" needs one or two comparisons'),
    ({"a": [{"numeric": ["=>", 0]}]}, '"numeric" has an unknown comparison "=>"; use one of =, <, <=, >, >='),
    ({"a": [{"numeric": [">", "5"]}]}, '"numeric" needs a finite number after ">", got "5"; write [">", 5]'),
    ({"a": [{"numeric": [">", True]}]}, '"numeric" needs a finite number after ">", got true'),
    ({"a": [{"numeric": [">", 0, "<", None]}]}, 'needs a finite number after "<", got null'),
    ({"a": [{"numeric": [">", 10, "<", 5]}]}, '"numeric" range [">", 10, "<", 5] is empty'),
    ({"a": [{"numeric": [">", 5, "<=", 5]}]}, "is empty because its lower bound 5 is not below its upper bound 5"),
    ({"a": [{"numeric": ["<", 5, ">", 0]}]}, 'needs the lower bound (">" or ">=") first'),
    ({"a": [{"numeric": ["=", 3, "<", 5]}]}, 'needs the lower bound (">" or ">=") first'),
    ({"a": [{"numeric": [">", 0, ">", 5]}]}, 'needs the lower bound (">" or ">=") first'),
    ({"a": [{"anything-but": []}]}, '"anything-but" needs a string, a number, a list of only strings or only numbers'),
    ({"a": [{"anything-but": ["x", 1]}]}, 'got ["x", 1]'),
    ({"a": [{"anything-but": True}]}, "got true"),
    ({"a": [{"anything-but": None}]}, "got null"),
    ({"a": [{"anything-but": [{"prefix": "x"}]}]}, 'got [{"prefix": "x"}]'),
    ({"a": [{"anything-but": {"numeric": [">", 1]}}]}, '"anything-but" takes one of prefix, suffix, '
                                                        "equals-ignore-case, wildcard as a nested operator"),
    ({"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}, "as a nested operator"),
    ({"a": [{"anything-but": {"prefix": 5}}]}, 'filter.a[0].anything-but: "prefix" needs a string, got 5'),
    ({"a": [{"anything-but": {"equals-ignore-case": [5]}}]}, '"equals-ignore-case" needs a string, got 5'),
    ({"a": [{"anything-but": {"wildcard": "a**"}}]}, '"wildcard" has consecutive *'),
    ({"$or": {"a": ["x"]}}, 'filter.$or: "$or" needs an array of at least two pattern objects, got {"a": ["x"]}'),
    ({"$or": [{"a": ["x"]}]}, '"$or" needs an array of at least two pattern objects'),
    ({"$or": [{"a": ["x"]}, ["b"]]}, '"$or" needs an array of at least two pattern objects'),
    ({"$or": [{"a": ["x"]}, {}]}, "filter.$or[1]: the object is empty"),
    ({"x": {"$or": [{"a": ["x"]}, {"b": [{"exists": "no"}]}]}}, 'filter.x.$or[1].b[0]: "exists" needs true or false'),
    ({"a b": 5}, 'filter["a b"]: a field needs an array'),
    ({1: ["x"]}, "filter: field names must be strings, got 1"),
]


@pytest.mark.parametrize(("pattern", "fragment"), ERROR_CASES, ids=[case[1][:60] for case in ERROR_CASES])
def test_invalid_pattern_rejected(pattern: object, fragment: str) -> None:
    with pytest.raises(PatternError) as raised:
        compile_pattern(pattern)
    assert fragment in str(raised.value)


def test_error_path_names_the_pattern() -> None:
    with pytest.raises(PatternError, match=r"^dispatchers\[2\]\.filter\.a: "):
        compile_pattern({"a": "x"}, path="dispatchers[2].filter")


def _nested(depth: int) -> dict[str, Any]:
    pattern: dict[str, Any] = {"leaf": ["x"]}
    for _ in range(depth - 1):
        pattern = {"n": pattern}
    return pattern


def test_depth_cap() -> None:
    compile_pattern(_nested(MAX_DEPTH))
    with pytest.raises(PatternError, match=f"nests objects more than {MAX_DEPTH} deep"):
        compile_pattern(_nested(MAX_DEPTH + 1))


def test_depth_counts_or_branches() -> None:
    inner = _nested(MAX_DEPTH - 1)
    compile_pattern({"n": inner, "m": ["y"]})
    with pytest.raises(PatternError, match="nests objects more than"):
        compile_pattern({"$or": [{"n": inner}, {"m": ["y"]}]})


def test_matcher_cap() -> None:
    compile_pattern({"a": list(range(MAX_MATCHERS))})
    with pytest.raises(PatternError, match=rf"filter\.b\[0\]: the pattern has more than {MAX_MATCHERS} matchers"):
        compile_pattern({"a": list(range(MAX_MATCHERS)), "b": ["x"]})


def test_matcher_cap_counts_anything_but_values() -> None:
    with pytest.raises(PatternError, match=f"more than {MAX_MATCHERS} matchers"):
        compile_pattern({"a": [{"anything-but": [str(value) for value in range(MAX_MATCHERS + 1)]}]})
    with pytest.raises(PatternError, match=f"more than {MAX_MATCHERS} matchers"):
        compile_pattern({"a": [{"anything-but": {"wildcard": ["x*"] * (MAX_MATCHERS + 1)}}]})


def test_normalised_json_round_trips() -> None:
    source = {"data": {"ip": [{"cidr": "10.0.0.7/24"}], "n": [{"numeric": [">", 0, "<=", 5]}]},
              "$or": [{"a": ["x", 1, None, True]}, {"b": [{"anything-but": {"prefix": "x"}}]}]}
    compiled = compile_pattern(source)
    normalised = compiled.to_json()
    assert normalised["data"]["ip"] == [{"cidr": "10.0.0.0/24"}]
    assert normalised["$or"] == source["$or"]
    assert compile_pattern(normalised) == compiled
    assert hash(compile_pattern(normalised)) == hash(compiled)


def test_to_json_returns_a_copy() -> None:
    compiled = compile_pattern({"a": ["x"]})
    compiled.to_json()["a"].append("y")
    assert compiled.to_json() == {"a": ["x"]}


def test_compile_leaves_source_unchanged() -> None:
    source = {"a": [{"cidr": "10.0.0.7/24"}]}
    compile_pattern(source)
    assert source == {"a": [{"cidr": "10.0.0.7/24"}]}


def test_pattern_is_immutable() -> None:
    compiled = compile_pattern({"a": ["x"]})
    with pytest.raises(AttributeError, match="immutable"):
        compiled._root = None  # type: ignore[misc]


def test_patterns_compare_by_content() -> None:
    assert compile_pattern({"a": ["x"], "b": [1]}) == compile_pattern({"b": [1], "a": ["x"]})
    assert compile_pattern({"a": ["x"]}) != compile_pattern({"a": ["y"]})


def test_wildcard_is_linear_on_hostile_input() -> None:
    compiled = compile_pattern({"a": [{"wildcard": "*a*a*a*a*a*a*a*a*b"}]})
    assert not compiled.matches({"a": "a" * 100_000})


def test_deeply_nested_event_arrays() -> None:
    value: Any = "x"
    for _ in range(5_000):
        value = [value]
    event = {"a": value, "b": {"c": value}}
    assert compile_pattern({"a": ["x"]}).matches(event)
    assert compile_pattern({"b": {"c": ["x"]}}).matches(event)
    assert PatternIndex([(1, compile_pattern({"a": ["x"]}))]).match(event) == [1]


# The index


def test_index_keeps_entry_order() -> None:
    entries = [("b", compile_pattern({"a": ["x"]})), ("none", None), ("a", compile_pattern({"a": [{"prefix": "x"}]})),
               ("c", compile_pattern({"a": ["x", "y"]}))]
    index = PatternIndex(entries)
    assert index.match({"a": "x"}) == ["b", "none", "a", "c"]
    assert index.match({"a": "y"}) == ["none", "c"]
    assert index.match({}) == ["none"]
    assert len(index) == 4


def test_index_empty() -> None:
    assert PatternIndex([]).match({"a": 1}) == []


def test_index_rejects_non_object_event() -> None:
    with pytest.raises(TypeError, match="an event must be a JSON object"):
        PatternIndex([(1, None)]).match([{"a": 1}])  # type: ignore[arg-type]


def test_index_evaluates_only_candidates() -> None:
    entries = [(i, compile_pattern({"data": {"toStatus": ["analyzed"], "documentId": [f"d{i}"]}})) for i in range(1000)]
    index = PatternIndex(entries)
    event = {"data": {"toStatus": "analyzed", "documentId": "d7"}}
    assert index.match(event) == [7]
    assert index.candidate_count(event) == 1
    assert index.candidate_count({"data": {"toStatus": "analyzed"}}) == 0


def test_index_anchors_or_branches() -> None:
    entries = [(i, compile_pattern({"$or": [{"a": [f"x{i}"]}, {"b": {"c": [i]}}]})) for i in range(100)]
    index = PatternIndex(entries)
    assert index.match({"a": "x3", "b": {"c": [5, 3]}}) == [3, 5]
    assert index.candidate_count({"a": "x3", "b": {"c": [5, 3]}}) == 2


def test_index_crosses_event_arrays() -> None:
    entries = [(i, compile_pattern({"a": {"b": {"c": [f"x{i}"]}}})) for i in range(10)]
    index = PatternIndex(entries)
    assert index.match({"a": [{"b": {"c": "x1"}}, {"b": [{"c": ["x4", "x2"]}]}]}) == [1, 2, 4]
    assert index.match({"a": [[{"b": {"c": "x3"}}]]}) == [3]
    assert index.candidate_count({"a": [{"b": "x1"}, 5, None]}) == 0


def test_index_checks_unanchored_patterns_every_time() -> None:
    entries = [(i, compile_pattern({"n": [{"anything-but": i}]})) for i in range(5)]
    entries += [(5, compile_pattern({"n": [{"exists": True}]})), (6, compile_pattern({"ip": [{"cidr": "10.0.0.0/8"}]})),
                (7, compile_pattern({"n": [{"prefix": ""}]})), (8, compile_pattern({"n": [{"wildcard": "*x*"}]}))]
    index = PatternIndex(entries)
    assert index.candidate_count({}) == 9
    assert index.match({"n": 3}) == [0, 1, 2, 4, 5]


def test_index_intersects_required_paths() -> None:
    entries = [(f"{schema}/{status}", compile_pattern({"data": {"schemaId": [f"s{schema}"], "status": [f"t{status}"]}}))
               for schema in range(100) for status in range(10)]
    index = PatternIndex(entries)
    event = {"data": {"schemaId": "s42", "status": "t7"}}
    assert index.match(event) == ["42/7"]
    assert index.candidate_count(event) == 1
    assert index.candidate_count({"data": {"schemaId": "s42"}}) == 0


def test_index_filters_numeric_ranges() -> None:
    entries = [(i, compile_pattern({"n": [{"numeric": [">", i * 10]}]})) for i in range(10)]
    entries += [(10 + i, compile_pattern({"n": [{"numeric": [">=", i * 10, "<", i * 10 + 10]}, 1000]}))
                for i in range(10)]
    index = PatternIndex(entries)
    assert index.match({"n": 35}) == [0, 1, 2, 3, 13]
    assert index.candidate_count({"n": 35}) == 5
    assert index.match({"n": 30}) == [0, 1, 2, 13]
    assert index.candidate_count({"n": 30}) == 6, "bounds count as inclusive in the index"
    assert index.match({"n": 1000}) == list(range(10)) + list(range(10, 20))
    assert index.candidate_count({"n": "35"}) == 0


def test_index_filters_string_operators() -> None:
    entries = [
        ("prefix", compile_pattern({"s": [{"prefix": "bp-"}]})),
        ("suffix", compile_pattern({"s": [{"suffix": "-home"}]})),
        ("folded", compile_pattern({"s": [{"equals-ignore-case": "BP-CLINIC"}]})),
        ("folded prefix", compile_pattern({"s": [{"prefix": {"equals-ignore-case": "WEIGHT"}}]})),
        ("folded suffix", compile_pattern({"s": [{"suffix": {"equals-ignore-case": "-TRIAL"}}]})),
        ("wildcard head", compile_pattern({"s": [{"wildcard": "glucose-*"}]})),
        ("wildcard tail", compile_pattern({"s": [{"wildcard": "*-kids"}]})),
    ]
    index = PatternIndex(entries)
    expected = {"bp-home": ["prefix", "suffix"], "bp-clinic": ["prefix", "folded"], "Weight-x": ["folded prefix"],
                "spo2-Trial": ["folded suffix"], "glucose-1": ["wildcard head"], "ecg-kids": ["wildcard tail"],
                "mood": []}
    for value, names in expected.items():
        assert index.match({"s": value}) == names, value
        assert index.candidate_count({"s": value}) == len(names), value


def test_index_keys_literals_apart_from_numbers() -> None:
    index = PatternIndex([("one", compile_pattern({"a": [1]})), ("true", compile_pattern({"a": [True]})),
                          ("null", compile_pattern({"a": [None]})), ("zero", compile_pattern({"a": [0]})),
                          ("false", compile_pattern({"a": [False]}))])
    assert index.match({"a": True}) == ["true"]
    assert index.match({"a": 1.0}) == ["one"]
    assert index.match({"a": None}) == ["null"]
    assert index.match({"a": False}) == ["false"]
    assert index.match({"a": [0, None]}) == ["null", "zero"]
    assert index.candidate_count({"a": True}) == 1
    assert index.candidate_count({"a": 0}) == 1


# Property: the index returns exactly the entries whose pattern matches, in order.

FIELDS = ("a", "b", "c")
STRINGS = ("", "x", "xy", "X", "yx", "10.0.0.1", "ß", "SS")
NUMBERS = (0, 1, 1.0, 2.5, -3)
scalars = st.sampled_from(STRINGS) | st.sampled_from(NUMBERS) | st.sampled_from((True, False, None))
texts = st.sampled_from(STRINGS)
numbers = st.sampled_from(NUMBERS)


def _operator(name: str, operand: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return operand.map(lambda value: {name: value})


def _range(bounds: tuple[float, float]) -> dict[str, Any]:
    low, high = sorted(bounds)
    return {"numeric": [">=", low, "<=", high]}


matchers = st.one_of(
    scalars, scalars, scalars,
    _operator("prefix", texts), _operator("suffix", texts), _operator("equals-ignore-case", texts),
    _operator("prefix", texts.map(lambda text: {"equals-ignore-case": text})),
    _operator("anything-but", texts), _operator("anything-but", st.lists(numbers, min_size=1, max_size=2)),
    _operator("anything-but", texts.map(lambda text: {"prefix": text})),
    _operator("numeric", st.tuples(st.sampled_from((">", ">=", "<", "<=", "=")), numbers).map(list)),
    st.tuples(numbers, numbers).map(_range),
    _operator("exists", st.booleans()), _operator("wildcard", st.sampled_from(("x*", "*y", "*", "1*.1"))),
    _operator("cidr", st.just("10.0.0.0/8")),
)
leaves = st.lists(matchers, min_size=1, max_size=3)


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    plain = st.dictionaries(st.sampled_from(FIELDS), leaves | children, min_size=1, max_size=3)
    with_or = st.tuples(plain, st.lists(children, min_size=2, max_size=3)).map(
        lambda parts: parts[0] | {"$or": parts[1]})
    return plain | with_or


patterns = st.recursive(st.dictionaries(st.sampled_from(FIELDS), leaves, min_size=1, max_size=2), _objects,
                        max_leaves=6)
event_values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                            | st.dictionaries(st.sampled_from(FIELDS), children, max_size=3), max_leaves=10)
events = st.dictionaries(st.sampled_from(FIELDS), event_values, max_size=3)


def _event_like(draw: st.DrawFn, pattern: dict[str, Any]) -> dict[str, Any]:
    """Draw an event shaped like the pattern, often inside arrays, so that many events match."""
    event: dict[str, Any] = {}
    for key, condition in pattern.items():
        if key == "$or":
            event.update(_event_like(draw, draw(st.sampled_from(condition))))
            continue
        if isinstance(condition, dict):
            value: Any = _event_like(draw, condition)
        else:
            matcher = draw(st.sampled_from(condition))
            value = draw(scalars) if isinstance(matcher, dict) else matcher
        if draw(st.booleans()):
            value = draw(st.permutations([value, draw(event_values)]))
        event[key] = value
    return event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.none() | patterns, max_size=8), st.lists(events, max_size=2), st.data())
def test_index_equals_brute_force(sources: list[dict[str, Any] | None], sample: list[dict[str, Any]],
                                  data: st.DataObject) -> None:
    compiled: list[Pattern | None] = [None if source is None else compile_pattern(source) for source in sources]
    entries = list(enumerate(compiled))
    index = PatternIndex(entries)
    with patch.object(pattern_index, "MIN_PROBE_MEMBERS", 1):
        probed_index = PatternIndex(entries)    # every indexed path probed
    sample += [data.draw(st.builds(dict)) if source is None else _event_like(data.draw, source) for source in sources]
    for event in sample:
        expected = [position for position, pattern in entries if pattern is None or pattern.matches(event)]
        assert index.match(event) == expected
        assert probed_index.match(event) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns, st.lists(events, max_size=3), st.data())
def test_generated_code_equals_closures(source: dict[str, Any], sample: list[dict[str, Any]],
                                        data: st.DataObject) -> None:
    compiled = compile_pattern(source)
    sample.append(_event_like(data.draw, source))
    for event in sample:
        assert compiled._match_fields(event) == compiled._root.match_fields(event)
