"""Generated Python functions for the two hot paths of matching: evaluating a pattern and
selecting the candidate patterns of an event.

Per pattern: the closure tree of pattern_tree handles every event shape, but costs a call
per object level and per leaf. The generated function tests all levels in one body for the usual
event, where each object of the pattern meets an object in the event. Where the event has
an array, a scalar or nothing instead, it calls that object's closure, so the result is
always the one of ObjectNode.match_fields. Exact-string leaves are tested inline.

Per index: the candidate function walks the event once along the trie of probed paths and
looks values up inline. Where the event has no object on a path, it calls the probe's own
walk, which crosses arrays.

Pattern keys and values never become source text: the source names them through
constants of the function's namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from taskservice.consumers.pattern_tree import MISSING, Leaf, Matcher, ObjectNode


class _Generator:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"MISSING": MISSING}

    def constant(self, value: Any, prefix: str) -> str:
        name = f"{prefix}_{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def fields(self, node: ObjectNode, variable: str, indent: int, depth: int) -> None:
        """Emit the tests of the object's fields on `variable`, an event object."""
        for key, child in node.fields:
            key_name = self.constant(key, "key")
            if isinstance(child, Leaf):
                item = f"item{depth}"
                self.emit(indent, f"{item} = {variable}.get({key_name}, MISSING)")
                leaf = self.constant(child.match, "leaf")
                if child.exact_strings is not None:
                    strings = self.constant(child.exact_strings, "strings")
                    self.emit(indent, f"if not ({item} in {strings} if type({item}) is str else {leaf}({item})):")
                else:
                    self.emit(indent, f"if not {leaf}({item}):")
                self.emit(indent + 1, "return False")
                continue
            nested = f"value{depth + 1}"
            self.emit(indent, f"{nested} = {variable}.get({key_name}, MISSING)")
            self.emit(indent, f"if type({nested}) is dict:")
            self.fields(child, nested, indent + 1, depth + 1)
            self.alternatives(child, nested, indent + 1)
            fallback = self.constant(child.match, "object")
            self.emit(indent, f"elif not {fallback}({nested}):")
            self.emit(indent + 1, "return False")

    def alternatives(self, node: ObjectNode, variable: str, indent: int) -> None:
        if node.alternatives:
            calls = [f"{self.constant(branch.match_fields, 'branch')}({variable})" for branch in node.alternatives]
            self.emit(indent, f"if not ({' or '.join(calls)}):")
            self.emit(indent + 1, "return False")


def generate_match_fields(root: ObjectNode) -> Matcher:
    """Return a function equal to root.match_fields, generated as one body."""
    generator = _Generator()
    generator.emit(0, "def match_fields(value0):")
    generator.fields(root, "value0", 1, 0)
    generator.alternatives(root, "value0", 1)
    generator.emit(1, "return True")
    return _define(generator, "match_fields")


def _define(generator: _Generator, name: str) -> Any:
    source = "\n".join(generator.lines)
    exec(compile(source, f"<generated {name}>", "exec"), generator.namespace)  # noqa: S102 - source built above
    return generator.namespace[name]


# A probe as the candidate function needs it: (path, scalar_mask, exact_get or None, others, hits).
# scalar_mask maps one scalar to bits, exact_get is the exact-key table's get when the path has
# only exact keys, others are the bits of the patterns not filed under the path, and hits walks
# the whole event, arrays included.
ProbeSpec = tuple[tuple[str, ...], Callable[[Any], int], Callable[[Any, int], int] | None, int,
                  Callable[[dict[str, Any]], int]]


class _PathNode:
    """A node of the trie of probed paths, so that shared path prefixes are walked once."""

    def __init__(self) -> None:
        self.children: dict[str, _PathNode] = {}
        self.probes: list[tuple[bool, ProbeSpec]] = []     # (required, probe) ending here

    def descendant_probes(self) -> Iterator[tuple[bool, ProbeSpec]]:
        for child in self.children.values():
            yield from child.probes
            yield from child.descendant_probes()


class _CandidateGenerator(_Generator):
    def walk(self, node: _PathNode, variable: str, indent: int, depth: int) -> None:
        """Emit the probes below node, where `variable` is the event's object at node's path."""
        for key, child in node.children.items():
            item = f"item{depth}"
            self.emit(indent, f"{item} = {variable}.get({self.constant(key, 'key')}, MISSING)")
            for required, probe in child.probes:
                self.probe(required, probe, item, indent)
            if child.children:
                nested = f"value{depth + 1}"
                self.emit(indent, f"if type({item}) is dict:")
                self.emit(indent + 1, f"{nested} = {item}")
                self.walk(child, nested, indent + 1, depth + 1)
                self.emit(indent, "else:")
                for required, probe in child.descendant_probes():
                    self.update(required, f"{self.constant(probe[4], 'hits')}(value0)", probe, indent + 1)

    def probe(self, required: bool, probe: ProbeSpec, item: str, indent: int) -> None:
        scalar_mask = self.constant(probe[1], "scalar_mask")
        expression = f"array_hits({item}, (), {scalar_mask}) if type({item}) is list else {scalar_mask}({item})"
        if probe[2] is not None:
            exact_get = self.constant(probe[2], "exact_get")
            expression = f"{exact_get}({item}, 0) if type({item}) is str else ({expression})"
        self.update(required, expression, probe, indent)

    def update(self, required: bool, expression: str, probe: ProbeSpec, indent: int) -> None:
        if required:
            others = self.constant(probe[3], "others")
            self.emit(indent, f"selected = {expression}")
            self.emit(indent, f"mask &= (selected | {others}) if selected else {others}")
        else:
            self.emit(indent, f"union |= {expression}")


def generate_candidates(required: Sequence[ProbeSpec], unions: Sequence[ProbeSpec], all_bits: int,
                        unanchored: int, not_union_members: int,
                        array_hits: Callable[..., int]) -> Callable[[dict[str, Any]], int]:
    """Return a function from an event object to the bits of the patterns that can match it.

    A pattern is a candidate when every required probe it is filed under selects it and,
    if it has a union, when some union probe selects it. Patterns in unanchored always are.
    """
    root = _PathNode()
    for is_required, probes in ((True, required), (False, unions)):
        for probe in probes:
            node = root
            for key in probe[0]:
                node = node.children.setdefault(key, _PathNode())
            node.probes.append((is_required, probe))
    generator = _CandidateGenerator()
    generator.namespace["array_hits"] = array_hits
    generator.emit(0, "def candidates(value0):")
    generator.emit(1, f"mask = {generator.constant(all_bits, 'all_bits')}")
    if unions:
        generator.emit(1, "union = 0")
    generator.walk(root, "value0", 1, 0)
    if unions:
        generator.emit(1, f"mask &= union | {generator.constant(not_union_members, 'not_union_members')}")
    generator.emit(1, f"return mask | {generator.constant(unanchored, 'unanchored')}")
    return _define(generator, "candidates")
