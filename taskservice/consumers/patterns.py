"""Content filters of dispatchers: Amazon EventBridge event patterns, compiled and indexed.

`compile_pattern` validates a pattern (a JSON object) and compiles it into a `Pattern`,
whose `matches` tests one event. `PatternIndex` indexes the patterns of many dispatchers
and evaluates, for each event, only the patterns that can match it. Nothing here does I/O.

The semantics follow the Amazon EventBridge event-pattern documentation. docs/filters.md
lists the operators, the limits and the few places where this implementation differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import orjson

from taskservice.consumers.pattern_compiler import (MAX_DEPTH, MAX_MATCHERS, OPERATORS, Compiler, PatternError,
                                                    show)
from taskservice.consumers.pattern_codegen import generate_match_fields
from taskservice.consumers.pattern_index import CandidateFilter
from taskservice.consumers.pattern_tree import Matcher, ObjectNode

__all__ = ["MAX_DEPTH", "MAX_MATCHERS", "OPERATORS", "Pattern", "PatternError", "PatternIndex", "compile_pattern"]

T = TypeVar("T")


class Pattern:
    """A validated, compiled event pattern. It is immutable. Build it with `compile_pattern`."""

    __slots__ = ("_json", "_match_fields", "_root")

    def __init__(self, root: ObjectNode, normalised: dict[str, Any]) -> None:
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_match_fields", generate_match_fields(root))
        object.__setattr__(self, "_json", orjson.dumps(normalised))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Pattern is immutable; compile a new pattern instead of setting {name}")

    def matches(self, event: dict[str, Any]) -> bool:
        """Return whether the event (a decoded JSON object) matches the pattern."""
        if type(event) is dict:
            return self._match_fields(event)
        return self._root.match(event)

    def to_json(self) -> dict[str, Any]:
        """Return the normalised pattern as a new JSON object, for storage.

        It is the pattern as given, with CIDR blocks in network form ("10.0.0.7/24" becomes
        "10.0.0.0/24"). Compiling it again gives an equal pattern.
        """
        return orjson.loads(self._json)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pattern) and orjson.loads(self._json) == orjson.loads(other._json)

    def __hash__(self) -> int:
        return hash(orjson.dumps(orjson.loads(self._json), option=orjson.OPT_SORT_KEYS))

    def __repr__(self) -> str:
        return f"Pattern({self._json.decode()})"


def compile_pattern(pattern: object, *, path: str = "filter") -> Pattern:
    """Validate an event pattern and compile it. Raises PatternError.

    path names the pattern in error messages, for example `filter` or `dispatchers[3].filter`.
    """
    if not isinstance(pattern, dict):
        raise PatternError(f"{path}: a pattern must be a JSON object, got {show(pattern)}; "
                           'write an object such as {"data": {"status": ["analyzed"]}}')
    if not pattern:
        raise PatternError(f"{path}: the pattern is empty; leave the filter out to match every event, "
                           'or give a field such as {"data": {"status": ["analyzed"]}}')
    root, normalised = Compiler().object(pattern, path, 1)
    return Pattern(root, normalised)


class PatternIndex(Generic[T]):
    """The patterns of many dispatchers, indexed so that an event evaluates only candidates.

    Entries are (value, pattern) pairs, and a pattern of None matches every event. `match`
    returns the values whose pattern matches, in the order of the entries.
    """

    __slots__ = ("_candidates", "_matchers", "_values")

    def __init__(self, entries: Iterable[tuple[T, Pattern | None]]) -> None:
        pairs = list(entries)
        self._values: tuple[T, ...] = tuple(value for value, _ in pairs)
        self._matchers: tuple[Matcher | None, ...] = tuple(
            None if pattern is None else pattern._match_fields for _, pattern in pairs)
        roots = [None if pattern is None else pattern._root for _, pattern in pairs]
        self._candidates = CandidateFilter(roots).candidates

    def __len__(self) -> int:
        return len(self._values)

    def match(self, event: dict[str, Any]) -> list[T]:
        """Return the values of the entries whose pattern matches the event, in entry order."""
        if type(event) is not dict:
            raise TypeError(f"an event must be a JSON object (dict), got {type(event).__name__}")
        mask = self._candidates(event)
        matched: list[T] = []
        matchers, values = self._matchers, self._values
        while mask:
            lowest = mask & -mask
            position = lowest.bit_length() - 1
            mask ^= lowest
            match_fields = matchers[position]
            if match_fields is None or match_fields(event):
                matched.append(values[position])
        return matched

    def candidate_count(self, event: dict[str, Any]) -> int:
        """Return how many patterns `match` evaluates for this event, not counting entries without a pattern."""
        if type(event) is not dict:
            raise TypeError(f"an event must be a JSON object (dict), got {type(event).__name__}")
        mask = self._candidates(event)
        return sum(1 for position, matcher in enumerate(self._matchers) if matcher is not None and mask >> position & 1)
