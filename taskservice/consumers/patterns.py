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
from taskservice.consumers.pattern_tree import MISSING, ObjectNode, index_key, iter_array

__all__ = ["MAX_DEPTH", "MAX_MATCHERS", "OPERATORS", "Pattern", "PatternError", "PatternIndex", "compile_pattern"]

T = TypeVar("T")


class Pattern:
    """A validated, compiled event pattern. It is immutable. Build it with `compile_pattern`."""

    __slots__ = ("_json", "_root")

    def __init__(self, root: ObjectNode, normalised: dict[str, Any]) -> None:
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_json", orjson.dumps(normalised))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Pattern is immutable; compile a new pattern instead of setting {name}")

    def matches(self, event: dict[str, Any]) -> bool:
        """Return whether the event (a decoded JSON object) matches the pattern."""
        if type(event) is dict:
            return self._root.match_fields(event)
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


# The index. Each pattern is filed under an anchor: a set of (path, exact value) pairs such
# that the pattern can only match an event that has one of those values at that path. The
# event's values at the indexed paths select the candidate patterns; patterns without an
# anchor are candidates for every event.

Anchor = tuple[float, tuple[tuple[tuple[str, ...], frozenset[Any]], ...]]


def _collect_exact_keys(node: ObjectNode, prefix: tuple[str, ...], seen: dict[tuple[str, ...], set[Any]]) -> None:
    for key, child in node.fields:
        path = prefix + (key,)
        if isinstance(child, ObjectNode):
            _collect_exact_keys(child, path, seen)
        elif child.exact_keys is not None:
            seen.setdefault(path, set()).update(child.exact_keys)
    for branch in node.alternatives:
        _collect_exact_keys(branch, prefix, seen)


def _best_anchor(node: ObjectNode, prefix: tuple[str, ...], spread: dict[tuple[str, ...], int]) -> Anchor | None:
    """Return the cheapest anchor of an object pattern, or None when it has none.

    The cost estimates the share of events that hit the anchor. Each value counts
    1 / (distinct values that all patterns name at that path + 1). So a document id, where
    patterns name many values, wins over a status with three. A required field gives an
    anchor, and a `$or` gives the union of its branches' anchors when every branch has one.
    """
    best: Anchor | None = None
    for key, child in node.fields:
        path = prefix + (key,)
        if isinstance(child, ObjectNode):
            candidate = _best_anchor(child, path, spread)
        elif child.exact_keys is not None:
            candidate = (len(child.exact_keys) / (spread[path] + 1), ((path, child.exact_keys),))
        else:
            candidate = None
        if candidate is not None and (best is None or candidate[0] < best[0]):
            best = candidate
    if node.alternatives:
        branches = [_best_anchor(branch, prefix, spread) for branch in node.alternatives]
        if all(branch is not None for branch in branches):
            cost = sum(branch[0] for branch in branches if branch is not None)
            if best is None or cost < best[0]:
                best = (cost, tuple(part for branch in branches if branch is not None for part in branch[1]))
    return best


def _value_mask(value: Any, table: dict[Any, int]) -> int:
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return table.get(value, 0)
    if kind is list:
        return _array_mask(value, (), table)
    if kind is dict or value is MISSING:
        return 0
    return table.get(index_key(value), 0)


def _path_mask(value: Any, path: tuple[str, ...], table: dict[Any, int]) -> int:
    """Return the entries filed under the values the event has at path, arrays crossed."""
    depth = 0
    for key in path:
        kind = type(value)
        if kind is dict:
            value = value.get(key, MISSING)
        elif kind is list:
            return _array_mask(value, path[depth:], table)
        else:
            return 0
        depth += 1
    return _value_mask(value, table)


def _array_mask(values: list[Any], path: tuple[str, ...], table: dict[Any, int]) -> int:
    mask = 0
    for item in iter_array(values):
        mask |= _path_mask(item, path, table) if path else _value_mask(item, table)
    return mask


class PatternIndex(Generic[T]):
    """The patterns of many dispatchers, indexed so that an event evaluates only candidates.

    Entries are (value, pattern) pairs, and a pattern of None matches every event. `match`
    returns the values whose pattern matches, in the order of the entries.
    """

    __slots__ = ("_patterns", "_tables", "_unanchored", "_values")

    def __init__(self, entries: Iterable[tuple[T, Pattern | None]]) -> None:
        pairs = list(entries)
        self._values: tuple[T, ...] = tuple(value for value, _ in pairs)
        self._patterns: tuple[ObjectNode | None, ...] = tuple(
            None if pattern is None else pattern._root for _, pattern in pairs)
        seen: dict[tuple[str, ...], set[Any]] = {}
        for root in self._patterns:
            if root is not None:
                _collect_exact_keys(root, (), seen)
        spread = {path: len(keys) for path, keys in seen.items()}
        tables: dict[tuple[str, ...], dict[Any, int]] = {}
        unanchored = 0      # bit i set: entry i is a candidate for every event
        for position, root in enumerate(self._patterns):
            anchor = None if root is None else _best_anchor(root, (), spread)
            if anchor is None:
                unanchored |= 1 << position
                continue
            for path, keys in anchor[1]:
                table = tables.setdefault(path, {})
                for key in keys:
                    table[key] = table.get(key, 0) | 1 << position
        self._tables = tuple(tables.items())
        self._unanchored = unanchored

    def __len__(self) -> int:
        return len(self._values)

    def _candidates(self, event: dict[str, Any]) -> int:
        mask = self._unanchored
        for path, table in self._tables:
            mask |= _path_mask(event, path, table)
        return mask

    def match(self, event: dict[str, Any]) -> list[T]:
        """Return the values of the entries whose pattern matches the event, in entry order."""
        mask = self._candidates(event)
        matched: list[T] = []
        patterns, values = self._patterns, self._values
        while mask:
            lowest = mask & -mask
            position = lowest.bit_length() - 1
            mask ^= lowest
            root = patterns[position]
            if root is None or root.match_fields(event):
                matched.append(values[position])
        return matched

    def candidate_count(self, event: dict[str, Any]) -> int:
        """Return how many patterns `match` evaluates for this event, not counting entries without a pattern."""
        mask = self._candidates(event)
        return sum(1 for position, root in enumerate(self._patterns) if root is not None and mask >> position & 1)
