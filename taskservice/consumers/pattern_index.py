"""Candidate selection for PatternIndex: which patterns can match an event, as a bit mask.

Pattern i is bit i. Each leaf that a pattern requires (reached through objects, not through
`$or`) and that index keys can stand for is filed under its path. The pattern is a candidate
only when, at every path it is filed under, a value of the event selects one of its keys.
A pattern with a `$or` is also filed under a union of one anchor per branch. A pattern
with neither is a candidate for every event. Keys may select more patterns than match,
never fewer, so PatternIndex still evaluates each candidate.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from taskservice.consumers.pattern_tree import MISSING, AnchorKey, ObjectNode, index_key, iter_array

Path = tuple[str, ...]
Anchor = tuple[float, tuple[tuple[Path, frozenset[AnchorKey]], ...]]

# Estimated values of a typical domain that one key selects, relative to an exact value.
# They only choose among the anchors of `$or` branches.
_KIND_WEIGHTS = {"exact": 1.0, "folded": 1.0, "prefix": 2.0, "suffix": 2.0, "folded-prefix": 2.0,
                 "folded-suffix": 2.0, "range": 4.0}
_AFFIX_KINDS = ("prefix", "suffix", "folded-prefix", "folded-suffix")
# A probe, one path lookup per event, is used only when it files at least this many
# patterns, because evaluating a few patterns costs about as much as the lookup.
MIN_PROBE_MEMBERS = 4


AffixTables = tuple[int, dict[str, tuple[tuple[int, dict[str, int]], ...]]]


def _affix_tables(tables: dict[int, dict[str, int]], from_start: bool) -> AffixTables | None:
    """Group affix buckets by their shortest common length, for a two-step lookup.

    The value's first (or last) `shortest` characters select the few affix lengths worth
    trying, so a path with many affixes of different lengths costs two or three lookups.
    """
    if not tables:
        return None
    shortest = min(tables)
    groups: dict[str, dict[int, dict[str, int]]] = {}
    for length, table in tables.items():
        for affix, bits in table.items():
            head = affix[:shortest] if from_start else affix[-shortest:]
            groups.setdefault(head, {}).setdefault(length, {})[affix] = bits
    return shortest, {head: tuple(sorted(by_length.items())) for head, by_length in groups.items()}


def _affix_mask(text: str, tables: AffixTables, from_start: bool) -> int:
    shortest, groups = tables
    if len(text) < shortest:
        return 0
    group = groups.get(text[:shortest] if from_start else text[-shortest:])
    if group is None:
        return 0
    mask = 0
    for length, table in group:     # ascending lengths
        if length > len(text):
            break
        mask |= table.get(text[:length] if from_start else text[-length:], 0)
    return mask


class _Probe:
    """The buckets of one path: for each index key, the bits of the patterns filed under it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members = 0
        self.others = 0
        self.hits: Callable[[dict[str, Any]], int] = lambda event: 0
        self._exact: dict[Any, int] = {}
        self._folded: dict[str, int] = {}
        self._affixes: dict[str, dict[int, dict[str, int]]] = {kind: {} for kind in _AFFIX_KINDS}
        self._ranges: list[tuple[float, float, int]] = []

    def add(self, key: AnchorKey, bit: int) -> None:
        kind, value = key
        self.members |= bit
        if kind == "range":
            lower, upper = value
            self._ranges.append((float("-inf") if lower is None else lower,
                                 float("inf") if upper is None else upper, bit))
            return
        if kind == "exact":
            table = self._exact
        elif kind == "folded":
            table = self._folded
        else:
            table = self._affixes[kind].setdefault(len(value), {})
        table[value] = table.get(value, 0) | bit

    def freeze(self, all_bits: int) -> None:
        """Build hits, which returns the bits that the values of an event at the path select."""
        self.others = all_bits & ~self.members
        exact_get = self._exact.get if self._exact_only() else None
        self.hits = _hits_function(self.path, self._scalar_mask_function(), exact_get)

    def _exact_only(self) -> bool:
        return not (self._folded or self._ranges or any(self._affixes.values()))

    def _scalar_mask_function(self) -> Callable[[Any], int]:
        """Return a function from one scalar of the event to the bits it selects."""
        exact_get, folded_get = self._exact.get, self._folded.get
        prefixes, suffixes, folded_prefixes, folded_suffixes = (
            _affix_tables(self._affixes[kind], kind.endswith("prefix")) for kind in _AFFIX_KINDS)
        any_folded = bool(self._folded) or folded_prefixes is not None or folded_suffixes is not None
        range_mask = _range_mask_function(self._ranges)

        if self._exact_only():
            def exact_mask(value: Any) -> int:
                kind = type(value)
                if kind is str or kind is int or kind is float:
                    return exact_get(value, 0)
                if kind is bool or value is None:
                    return exact_get(index_key(value), 0)
                return 0

            return exact_mask

        def scalar_mask(value: Any) -> int:
            kind = type(value)
            if kind is str:
                mask = exact_get(value, 0)
                if prefixes is not None:
                    mask |= _affix_mask(value, prefixes, True)
                if suffixes is not None:
                    mask |= _affix_mask(value, suffixes, False)
                if any_folded:
                    folded = value.casefold()
                    mask |= folded_get(folded, 0)
                    if folded_prefixes is not None:
                        mask |= _affix_mask(folded, folded_prefixes, True)
                    if folded_suffixes is not None:
                        mask |= _affix_mask(folded, folded_suffixes, False)
                return mask
            if kind is int or kind is float:
                return exact_get(value, 0) | range_mask(value)
            if kind is bool or value is None:
                return exact_get(index_key(value), 0)
            return 0

        return scalar_mask


def _hits_function(path: Path, scalar_mask: Callable[[Any], int],
                   exact_get: Callable[[Any, int], int] | None) -> Callable[[dict[str, Any]], int]:
    """Return a function from an event object to the bits that its values at path select.

    Paths of one or two keys through objects take a route without a loop, and everything
    else, arrays included, goes through _path_hits. exact_get, given when the path has only
    exact keys, looks up a string value without calling scalar_mask.
    """
    if len(path) == 1:
        key = path[0]

        def hits_one(event: dict[str, Any]) -> int:
            value = event.get(key, MISSING)
            if type(value) is list:
                return _array_hits(value, (), scalar_mask)
            return scalar_mask(value)

        return hits_one
    if len(path) == 2:
        first, second = path
        rest = path[1:]

        def hits_two(event: dict[str, Any]) -> int:
            value = event.get(first, MISSING)
            if type(value) is not dict:
                return _path_hits(value, rest, scalar_mask)
            value = value.get(second, MISSING)
            if type(value) is list:
                return _array_hits(value, (), scalar_mask)
            return scalar_mask(value)

        if exact_get is None:
            return hits_two

        def hits_two_exact(event: dict[str, Any]) -> int:
            value = event.get(first, MISSING)
            if type(value) is dict:
                value = value.get(second, MISSING)
                if type(value) is str:
                    return exact_get(value, 0)
            return hits_two(event)

        return hits_two_exact
    return lambda event: _path_hits(event, path, scalar_mask)


def _range_mask_function(ranges: list[tuple[float, float, int]]) -> Callable[[Any], int]:
    """Return a function from a number to the bits of the ranges that contain it, bounds inclusive.

    by_lower[i] contains the ranges with the i lowest lower bounds and by_upper[j] those from
    the j-th upper bound up. So the ranges containing v are their intersection, found by two
    binary searches.
    """
    if not ranges:
        return lambda value: 0
    lowers = sorted(ranges, key=lambda entry: entry[0])
    uppers = sorted(ranges, key=lambda entry: entry[1])
    lower_bounds = [entry[0] for entry in lowers]
    upper_bounds = [entry[1] for entry in uppers]
    by_lower = [0]
    for _, _, bit in lowers:
        by_lower.append(by_lower[-1] | bit)
    by_upper = [0]
    for _, _, bit in reversed(uppers):
        by_upper.append(by_upper[-1] | bit)
    by_upper.reverse()

    def range_mask(value: float) -> int:
        return by_lower[bisect_right(lower_bounds, value)] & by_upper[bisect_left(upper_bounds, value)]

    return range_mask


def _path_hits(value: Any, path: Path, scalar_mask: Callable[[Any], int]) -> int:
    depth = 0
    for key in path:
        kind = type(value)
        if kind is dict:
            value = value.get(key, MISSING)
        elif kind is list:
            return _array_hits(value, path[depth:], scalar_mask)
        else:
            return 0
        depth += 1
    if type(value) is list:
        return _array_hits(value, (), scalar_mask)
    return scalar_mask(value)


def _array_hits(values: list[Any], path: Path, scalar_mask: Callable[[Any], int]) -> int:
    mask = 0
    for item in iter_array(values):
        mask |= _path_hits(item, path, scalar_mask) if path else scalar_mask(item)
    return mask


def _required_objects(node: ObjectNode, prefix: Path) -> Iterator[tuple[Path, ObjectNode]]:
    """Yield the object and every nested object that each match of it needs, with their paths."""
    yield prefix, node
    for key, child in node.fields:
        if isinstance(child, ObjectNode):
            yield from _required_objects(child, prefix + (key,))


def _required_leaves(node: ObjectNode, prefix: Path) -> Iterator[tuple[Path, frozenset[AnchorKey]]]:
    """Yield the indexable leaves that each match of the object needs, with their paths."""
    for path, required in _required_objects(node, prefix):
        for key, child in required.fields:
            if not isinstance(child, ObjectNode) and child.anchor_keys is not None:
                yield path + (key,), child.anchor_keys


def _all_leaves(node: ObjectNode, prefix: Path) -> Iterator[tuple[Path, frozenset[AnchorKey]]]:
    """Yield every indexable leaf of the object with its path, `$or` branches included."""
    yield from _required_leaves(node, prefix)
    for path, required in _required_objects(node, prefix):
        for branch in required.alternatives:
            yield from _all_leaves(branch, path)


def _cost(path: Path, keys: frozenset[AnchorKey], spread: dict[Path, int]) -> float:
    """Estimate the share of events that select a leaf's keys.

    A path where patterns name many distinct keys, like a document id, is more selective
    than one where they name three statuses.
    """
    return sum(_KIND_WEIGHTS[kind] for kind, _ in keys) / (spread[path] + 1)


def _best_single(node: ObjectNode, prefix: Path, spread: dict[Path, int]) -> Anchor | None:
    """Return the cheapest anchor of one `$or` branch: a required leaf or a nested union."""
    best = _best_union(node, prefix, spread)
    for path, keys in _required_leaves(node, prefix):
        cost = _cost(path, keys, spread)
        if best is None or cost < best[0]:
            best = (cost, ((path, keys),))
    return best


def _best_union(node: ObjectNode, prefix: Path, spread: dict[Path, int]) -> Anchor | None:
    """Return the cheapest union of branch anchors among the `$or` that each match needs.

    A `$or` qualifies when every branch has an anchor. Returns None when none qualifies.
    """
    best: Anchor | None = None
    for path, required in _required_objects(node, prefix):
        if not required.alternatives:
            continue
        branches = [_best_single(branch, path, spread) for branch in required.alternatives]
        parts = [branch for branch in branches if branch is not None]
        if len(parts) < len(branches):
            continue
        cost = sum(part[0] for part in parts)
        if best is None or cost < best[0]:
            best = (cost, tuple(anchor for part in parts for anchor in part[1]))
    return best


def _file(probes: dict[Path, _Probe], anchors: Iterable[tuple[Path, frozenset[AnchorKey]]], bit: int) -> None:
    for path, keys in anchors:
        probe = probes.setdefault(path, _Probe(path))
        for key in keys:
            probe.add(key, bit)


class CandidateFilter:
    """Selector of the patterns that can match an event. Patterns are given by position."""

    __slots__ = ("_all", "_not_union_members", "_required", "_unanchored", "_unions")

    def __init__(self, roots: Sequence[ObjectNode | None]) -> None:
        seen: dict[Path, set[AnchorKey]] = {}
        for root in roots:
            for path, keys in _all_leaves(root, ()) if root is not None else ():
                seen.setdefault(path, set()).update(keys)
        spread = {path: len(keys) for path, keys in seen.items()}

        required: dict[Path, _Probe] = {}
        unions: dict[Path, _Probe] = {}
        unanchored = union_members = 0
        for position, root in enumerate(roots):
            bit = 1 << position
            leaves = [] if root is None else list(_required_leaves(root, ()))
            union = None if root is None else _best_union(root, (), spread)
            if not leaves and union is None:
                unanchored |= bit
                continue
            _file(required, leaves, bit)
            if union is not None:
                union_members |= bit
                _file(unions, union[1], bit)

        all_bits = self._all = (1 << len(roots)) - 1
        for probe in (*required.values(), *unions.values()):
            probe.freeze(all_bits)
        # Leaving a probe out only adds candidates. So probes that file fewer patterns than
        # they cost to look up are left out, and the probes that file the most come first.
        kept = [probe for probe in required.values() if probe.members.bit_count() >= MIN_PROBE_MEMBERS]
        kept.sort(key=lambda probe: -probe.members.bit_count())
        self._required = tuple((probe.hits, probe.others) for probe in kept)
        if union_members.bit_count() < MIN_PROBE_MEMBERS:
            unions, union_members = {}, 0
        self._unions = tuple(probe.hits for probe in unions.values())
        self._not_union_members = all_bits & ~union_members
        self._unanchored = unanchored

    def candidates(self, event: Any) -> int:
        """Return the bits of the patterns that can match the event."""
        if type(event) is not dict:
            return self._all    # no path reaches into a non-object, so evaluation decides
        mask = self._all
        for hits, others in self._required:
            selected = hits(event)
            mask &= selected | others if selected else others
            if not mask:
                break
        if mask and self._unions:
            union = 0
            for hits in self._unions:
                union |= hits(event)
            mask &= union | self._not_union_members
        return mask | self._unanchored
