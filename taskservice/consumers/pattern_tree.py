"""The compiled form of event patterns: a tree of matching closures.

pattern_compiler builds the tree from a validated pattern; patterns.Pattern and
patterns.PatternIndex run it. Matching does no I/O and allocates little, because the ingest
process runs it for every event.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

Matcher = Callable[[Any], bool]
# (kind, key): ("exact", value), ("prefix", text), ("range", (lower, upper)) and the like.
AnchorKey = tuple[str, Any]
# (lower bound, lower inclusive, upper bound, upper inclusive); a missing bound is None.
NumericRange = tuple[float | None, bool, float | None, bool]

# The value of a field that the event does not have.
MISSING: Any = object()
_EMPTY_OBJECT: Any = MappingProxyType({})
# Index keys of the JSON literals, kept apart from numbers because True == 1 in Python.
_TRUE_KEY, _FALSE_KEY, _NULL_KEY = object(), object(), object()


def index_key(value: Any) -> Any:
    """Return the key under which the index files an exact value: numbers by value, literals apart."""
    if value is True:
        return _TRUE_KEY
    if value is False:
        return _FALSE_KEY
    if value is None:
        return _NULL_KEY
    return value


# Matching. The compiled tree is made of closures, because the ingest process calls them
# for every event and a closure call costs less than a method call with attribute lookups.


def _always(value: Any) -> bool:
    return True


def iter_array(values: list[Any]) -> Iterator[Any]:
    """Yield the elements of an event array with nested arrays flattened, without recursion."""
    pending = [values]
    while pending:
        for item in pending.pop():
            if type(item) is list:
                pending.append(item)
            else:
                yield item


def _match_array(values: list[Any], scalar: Matcher, absent: bool) -> bool:
    """Match a leaf against an event array: true when any scalar element matches.

    `exists: false` (absent) holds only when the array has no scalar at any depth, because
    exists applies to leaf values.
    """
    found = False
    for item in iter_array(values):
        if type(item) is not dict:
            if scalar(item):
                return True
            found = True
    return absent and not found


def _match_object_array(values: list[Any], match_fields: Matcher, empty_result: bool) -> bool:
    """Match an object pattern against an event array: true when any element matches.

    NOTE: so `exists: false` under an array of objects holds when one element lacks the
    field, while EventBridge describes it as the field being absent from the whole event.
    """
    seen = False
    for item in iter_array(values):
        seen = True
        if match_fields(item) if type(item) is dict else empty_result:
            return True
    return empty_result and not seen


class Leaf:
    """An array of matchers, compiled: it matches a value when any matcher does."""

    __slots__ = ("anchor_keys", "exact_strings", "match")

    def __init__(self, match: Matcher, anchor_keys: frozenset[AnchorKey] | None,
                 exact_strings: frozenset[str] | None) -> None:
        self.match = match
        # The (kind, key) pairs under which an index can file the leaf, or None when it cannot.
        self.anchor_keys = anchor_keys
        # The strings of a leaf of exact strings only, which generated code tests inline.
        self.exact_strings = exact_strings


class ObjectNode:
    """A pattern object, compiled: all its fields must match, and one `$or` branch if any."""

    __slots__ = ("alternatives", "fields", "match", "match_fields")

    def __init__(self, fields: list[tuple[str, Leaf | ObjectNode]], alternatives: list[ObjectNode]) -> None:
        # Exact-only leaves first, then other leaves, then nested objects: cheap tests first.
        def cost(field: tuple[str, Leaf | ObjectNode]) -> int:
            node = field[1]
            if isinstance(node, ObjectNode):
                return 2
            return 0 if node.anchor_keys is not None else 1

        self.fields = tuple(sorted(fields, key=cost))
        self.alternatives = tuple(alternatives)
        leaf_checks = tuple((key, node.match) for key, node in self.fields if isinstance(node, Leaf))
        # A nested object is matched through its match_fields when the event has an object
        # there, the usual case, which saves a call per level.
        object_checks = tuple((key, node.match_fields, node.match) for key, node in self.fields
                              if isinstance(node, ObjectNode))
        branches = tuple(branch.match_fields for branch in self.alternatives)
        missing = MISSING

        def match_fields(value: Any) -> bool:
            for key, check in leaf_checks:
                if not check(value.get(key, missing)):
                    return False
            for key, check_fields, check in object_checks:
                item = value.get(key, missing)
                if not (check_fields(item) if type(item) is dict else check(item)):
                    return False
            if branches:
                for branch in branches:
                    if branch(value):
                        return True
                return False
            return True

        # A missing field, a scalar or an empty array gives the pattern an object without fields.
        empty_result = match_fields(_EMPTY_OBJECT)

        def match(value: Any) -> bool:
            kind = type(value)
            if kind is dict:
                return match_fields(value)
            if kind is list:
                return _match_object_array(value, match_fields, empty_result)
            return empty_result

        self.match_fields = match_fields
        self.match = match


class LeafBuilder:
    """Collects the matchers of one leaf array and builds its matching closure and anchor keys."""

    def __init__(self) -> None:
        self.strings: set[str] = set()
        self.numbers: set[int | float] = set()
        self.literals: set[bool | None] = set()     # exact true, false, null
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        self.folded: set[str] = set()               # equals-ignore-case, case-folded
        self.folded_prefixes: list[str] = []
        self.folded_suffixes: list[str] = []
        self.wildcards: list[tuple[str, ...]] = []  # literal segments between the `*`
        self.ranges: list[NumericRange] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.string_tests: list[Matcher] = []       # anything-but on strings
        self.number_tests: list[Matcher] = []       # anything-but on numbers
        self.exists = False                         # exists: true, matches every scalar
        self.absent = False                         # exists: false
        self.indexable = True                       # false after a matcher no index key can stand for
        # anything-but that lets every value of a kind through (a number for a string list).
        self.all_strings = False
        self.all_numbers = False
        self.all_literals = False

    def build(self) -> Leaf:
        string_test = self._string_test()
        number_test = self._number_test()
        literal_ok = {
            literal: self.exists or self.all_literals or literal in self.literals for literal in (True, False, None)
        }
        true_result, false_result, null_result = literal_ok[True], literal_ok[False], literal_ok[None]
        absent = self.absent

        def scalar(value: Any) -> bool:
            kind = type(value)
            if kind is str:
                return string_test(value)
            if kind is int or kind is float:
                return number_test(value)
            if kind is bool:
                return true_result if value else false_result
            return null_result if value is None else False

        def match(value: Any) -> bool:
            # Repeats the first tests of scalar, which saves a call for strings and numbers.
            kind = type(value)
            if kind is str:
                return string_test(value)
            if kind is int or kind is float:
                return number_test(value)
            if kind is dict or value is MISSING:
                return absent
            if kind is list:
                return _match_array(value, scalar, absent)
            return scalar(value)

        return Leaf(match, self._anchor_keys(), self._exact_strings())

    def _exact_strings(self) -> frozenset[str] | None:
        others = (self.numbers or self.literals or self.prefixes or self.suffixes or self.folded
                  or self.folded_prefixes or self.folded_suffixes or self.wildcards or self.ranges or self.networks
                  or self.string_tests or self.number_tests or self.exists or self.absent)
        return frozenset(self.strings) if self.strings and not others else None

    def _anchor_keys(self) -> frozenset[AnchorKey] | None:
        """Return index keys such that every value the leaf matches selects one of them.

        A range's bounds count as inclusive, and a wildcard stands for its literal head or tail,
        so a key may select values that the leaf rejects, never the other way round.
        """
        if not self.indexable or self.exists or self.absent:
            return None
        # Literals get their own keys before any set union, because True == 1 and False == 0.
        keys: set[AnchorKey] = {("exact", index_key(value)) for value in self.literals}
        keys.update(("exact", value) for value in self.strings | self.numbers)
        keys.update(("folded", text) for text in self.folded)
        keys.update(("range", (lower, upper)) for lower, _, upper, _ in self.ranges)
        affixes = [("prefix", self.prefixes), ("suffix", self.suffixes),
                   ("folded-prefix", self.folded_prefixes), ("folded-suffix", self.folded_suffixes)]
        for segments in self.wildcards:
            affixes.append(("prefix", [segments[0]]) if segments[0] else ("suffix", [segments[-1]]))
        for kind, texts in affixes:
            if "" in texts:
                return None     # an empty prefix or suffix matches every string
            keys.update((kind, text) for text in texts)
        return frozenset(keys)

    def _string_test(self) -> Matcher:
        if self.exists or self.all_strings:
            return _always
        tests = [wildcard_test(segments) for segments in self.wildcards] + self.string_tests
        if self.prefixes:
            prefixes = tuple(self.prefixes)
            tests.insert(0, lambda value: value.startswith(prefixes))
        if self.suffixes:
            suffixes = tuple(self.suffixes)
            tests.insert(0, lambda value: value.endswith(suffixes))
        if self.folded or self.folded_prefixes or self.folded_suffixes:
            folded, folded_prefixes, folded_suffixes = (
                frozenset(self.folded), tuple(self.folded_prefixes), tuple(self.folded_suffixes))

            def test_folded(value: str) -> bool:
                value = value.casefold()
                return value in folded or value.startswith(folded_prefixes) or value.endswith(folded_suffixes)

            tests.append(test_folded)
        if self.networks:
            tests.append(_cidr_test(tuple(self.networks)))
        return _any_of(frozenset(self.strings), tuple(tests))

    def _number_test(self) -> Matcher:
        if self.exists or self.all_numbers:
            return _always
        tests = [_range_test(*numeric_range) for numeric_range in self.ranges] + self.number_tests
        return _any_of(frozenset(self.numbers), tuple(tests))


def _any_of(values: frozenset[Any], tests: tuple[Matcher, ...]) -> Matcher:
    if not tests:
        return values.__contains__
    if not values and len(tests) == 1:
        return tests[0]

    def test(value: Any) -> bool:
        if value in values:
            return True
        for check in tests:
            if check(value):
                return True
        return False

    return test


def wildcard_test(segments: tuple[str, ...]) -> Matcher:
    """Match a string against literal segments separated by `*`, without backtracking.

    The first segment must start the value and the last must end it. Each middle segment is
    searched left to right, and taking its leftmost occurrence never loses a match.
    """
    first, middle, last = segments[0], segments[1:-1], segments[-1]
    minimum = len(first) + len(last)

    def test(value: str) -> bool:
        if len(value) < minimum or not value.startswith(first) or not value.endswith(last):
            return False
        position, end = len(first), len(value) - len(last)
        for segment in middle:
            found = value.find(segment, position, end)
            if found < 0:
                return False
            position = found + len(segment)
        return True

    return test


def _cidr_test(networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> Matcher:
    """Match an IP address in text form against networks.

    socket.inet_pton parses about 20 times faster than ipaddress.ip_address and rejects the
    same malformed addresses, except IPv6 addresses with a scope id ("fe80::1%eth0"), which
    it rejects and ipaddress accepts.
    """
    by_family = [(family, tuple((int(network.network_address), int(network.netmask))
                                for network in networks if network.version == version))
                 for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6))]
    families = tuple((family, masks) for family, masks in by_family if masks)

    def test(value: str) -> bool:
        for family, masks in families:
            try:
                address = int.from_bytes(socket.inet_pton(family, value), "big")
            except (OSError, ValueError):
                continue
            return any(address & netmask == network for network, netmask in masks)
        return False

    return test


def _range_test(lower: float | None, lower_inclusive: bool, upper: float | None, upper_inclusive: bool) -> Matcher:
    if upper is None:
        return (lambda value: value >= lower) if lower_inclusive else (lambda value: value > lower)
    if lower is None:
        return (lambda value: value <= upper) if upper_inclusive else (lambda value: value < upper)
    if lower_inclusive and upper_inclusive:
        return lambda value: lower <= value <= upper
    if lower_inclusive:
        return lambda value: lower <= value < upper
    if upper_inclusive:
        return lambda value: lower < value <= upper
    return lambda value: lower < value < upper
