"""Validation of event patterns and their compilation into the tree of pattern_tree.

Every rule violation raises PatternError with the JSON path of the bad value, the value and
a fix.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from taskservice.consumers.pattern_tree import Leaf, LeafBuilder, ObjectNode, wildcard_test

MAX_DEPTH = 16
"""Maximum nesting of objects in a pattern, the root and each `$or` branch included."""

MAX_MATCHERS = 256
"""Maximum matchers in a pattern. Each value of an `anything-but` list counts as one."""

OPERATORS = ("anything-but", "cidr", "equals-ignore-case", "exists", "numeric", "prefix", "suffix", "wildcard")

_NUMERIC_OPERATORS = ("=", "<", "<=", ">", ">=")
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


class PatternError(ValueError):
    """Raised when a pattern is invalid; the message names the JSON path, the value and the fix."""


def show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and value == value and value not in (float("inf"), float("-inf"))



class Compiler:
    """Validates one pattern, compiles it and builds its normalised JSON form."""

    def __init__(self) -> None:
        self.matchers = 0

    def fail(self, path: str, message: str) -> PatternError:
        return PatternError(f"{path}: {message}")

    def count(self, path: str, amount: int = 1) -> None:
        self.matchers += amount
        if self.matchers > MAX_MATCHERS:
            raise self.fail(path, f"the pattern has more than {MAX_MATCHERS} matchers; "
                                  "split it into several dispatchers or use prefix, wildcard or numeric ranges")

    def object(self, value: dict[str, Any], path: str, depth: int) -> tuple[ObjectNode, dict[str, Any]]:
        if depth > MAX_DEPTH:
            raise self.fail(path, f"the pattern nests objects more than {MAX_DEPTH} deep; "
                                  "flatten it or split it into several dispatchers")
        if not value:
            raise self.fail(path, "the object is empty, so it states no condition; "
                                  'give it a field such as {"status": ["analyzed"]} or remove it')
        fields: list[tuple[str, Leaf | ObjectNode]] = []
        alternatives: list[ObjectNode] = []
        normalised: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise self.fail(path, f"field names must be strings, got {show(key)}")
            child = _child(path, key)
            if key == "$or":
                alternatives, normalised[key] = self.alternatives(item, child, depth)
            elif isinstance(item, dict):
                node, normalised[key] = self.object(item, child, depth + 1)
                fields.append((key, node))
            elif isinstance(item, list):
                leaf, normalised[key] = self.leaf(item, child)
                fields.append((key, leaf))
            elif key in OPERATORS:
                raise self.fail(path, f'"{key}" is an operator, so it goes in the array of a field; '
                                      f'write "field": [{{"{key}": {show(item)}}}]')
            else:
                raise self.fail(child, "a field needs an array of matchers or a nested object, "
                                       f"got {show(item)}; write [{show(item)}]")
        return ObjectNode(fields, alternatives), normalised

    def alternatives(self, value: object, path: str, depth: int) -> tuple[list[ObjectNode], list[dict[str, Any]]]:
        if not isinstance(value, list) or len(value) < 2 or not all(isinstance(item, dict) for item in value):
            raise self.fail(path, f'"$or" needs an array of at least two pattern objects, got {show(value)}; '
                                  'write "$or": [{"status": ["new"]}, {"priority": ["high"]}]')
        compiled = [self.object(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
        return [node for node, _ in compiled], [normalised for _, normalised in compiled]

    def leaf(self, items: list[Any], path: str) -> tuple[Leaf, list[Any]]:
        if not items:
            raise self.fail(path, 'the array of matchers is empty, so it never matches; '
                                  'give at least one matcher, such as ["analyzed"]')
        builder = LeafBuilder()
        normalised = [self.matcher(item, f"{path}[{index}]", builder) for index, item in enumerate(items)]
        return builder.build(), normalised

    def matcher(self, item: object, path: str, leaf: LeafBuilder) -> object:
        self.count(path)
        if isinstance(item, str):
            leaf.strings.add(item)
        elif item is None or isinstance(item, bool):
            leaf.literals.add(item)
        elif type(item) in (int, float):
            if not _is_number(item):
                raise self.fail(path, f"numbers must be finite, got {show(item)}")
            leaf.numbers.add(item)
        elif isinstance(item, dict):
            return self.operator(item, path, leaf)
        else:
            raise self.fail(path, "a matcher must be a string, a number, true, false, null or an operator object, "
                                  f'got {show(item)}; write each value as its own matcher, such as ["a", "b"]')
        return item

    def operator(self, item: dict[str, Any], path: str, leaf: LeafBuilder) -> object:
        if len(item) != 1:
            raise self.fail(path, f"an operator object needs exactly one key, got {show(item)}; "
                                  'write one operator per object, such as [{"prefix": "a"}, {"suffix": "b"}]')
        (name, operand), = item.items()
        handler = _OPERATOR_HANDLERS.get(name)
        if handler is None:
            close = difflib.get_close_matches(str(name), OPERATORS, n=1)
            fix = f'write "{close[0]}"' if close else f"use one of {', '.join(OPERATORS)}"
            raise self.fail(path, f"unknown operator {show(name)}; {fix}")
        normalised = handler(self, operand, path, leaf)
        return {name: operand if normalised is None else normalised}

    def string(self, operator: str, operand: object, path: str, example: str = "abc") -> str:
        if not isinstance(operand, str):
            raise self.fail(path, f'"{operator}" needs a string, got {show(operand)}; '
                                  f'write {{"{operator}": "{example}"}}')
        return operand

    def affix(self, operator: str, operand: object, path: str, leaf: LeafBuilder) -> None:
        if isinstance(operand, dict):
            if list(operand) != ["equals-ignore-case"]:
                raise self.fail(path, f'"{operator}" takes only "equals-ignore-case" as a nested operator, '
                                      f"got {show(operand)}; "
                                      f'write {{"{operator}": {{"equals-ignore-case": "abc"}}}}')
            text = self.string("equals-ignore-case", operand["equals-ignore-case"], f"{path}.{operator}")
            folded = leaf.folded_prefixes if operator == "prefix" else leaf.folded_suffixes
            folded.append(text.casefold())
            return
        text = self.string(operator, operand, path)
        (leaf.prefixes if operator == "prefix" else leaf.suffixes).append(text)

    def prefix(self, operand: object, path: str, leaf: LeafBuilder) -> None:
        self.affix("prefix", operand, path, leaf)

    def suffix(self, operand: object, path: str, leaf: LeafBuilder) -> None:
        self.affix("suffix", operand, path, leaf)

    def equals_ignore_case(self, operand: object, path: str, leaf: LeafBuilder) -> None:
        leaf.folded.add(self.string("equals-ignore-case", operand, path, "Analyzed").casefold())

    def exists(self, operand: object, path: str, leaf: LeafBuilder) -> None:
        if not isinstance(operand, bool):
            raise self.fail(path, f'"exists" needs true or false, got {show(operand)}; write {{"exists": true}}')
        if operand:
            leaf.exists = True
        else:
            leaf.absent = True

    def wildcard(self, operand: object, path: str, leaf: LeafBuilder) -> None:
        segments = self.wildcard_segments(operand, path)
        if len(segments) == 1:
            leaf.strings.add(segments[0])   # no `*`: an exact string
        else:
            leaf.wildcards.append(segments)

    def wildcard_segments(self, operand: object, path: str) -> tuple[str, ...]:
        """Split a wildcard at its unescaped `*`. The only valid escapes are `\\*` and `\\\\`."""
        text = self.string("wildcard", operand, path, "*.png")
        segments, current, position = [], [], 0
        while position < len(text):
            char = text[position]
            if char == "\\":
                following = text[position + 1:position + 2]
                if following not in ("*", "\\"):
                    raise self.fail(path, f'"wildcard" has an invalid escape at position {position} '
                                          rf"of {show(text)}; escape only * and \ as \* and \\")
                current.append(following)
                position += 2
                continue
            if char == "*":
                if text[position + 1:position + 2] == "*":
                    raise self.fail(path, f'"wildcard" has consecutive * at position {position} of {show(text)}; '
                                          "use a single *")
                segments.append("".join(current))
                current = []
            else:
                current.append(char)
            position += 1
        segments.append("".join(current))
        return tuple(segments)

    def cidr(self, operand: object, path: str, leaf: LeafBuilder) -> str:
        text = self.string("cidr", operand, path, "10.0.0.0/24")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise self.fail(path, f'"cidr" needs an IP network such as "10.0.0.0/24" or "2001:db8::/32", '
                                  f"got {show(text)} ({exc})") from None
        leaf.networks.append(network)
        leaf.indexable = False
        return str(network)

    def numeric(self, operand: object, path: str, leaf: LeafBuilder) -> None:
        example = 'write [">", 0, "<=", 5] or ["=", 3]'
        if not isinstance(operand, list) or len(operand) not in (2, 4):
            raise self.fail(path, f'"numeric" needs one or two comparisons, got {show(operand)}; {example}')
        for index in range(0, len(operand), 2):
            operator, bound = operand[index], operand[index + 1]
            if operator not in _NUMERIC_OPERATORS:
                raise self.fail(path, f'"numeric" has an unknown comparison {show(operator)}; '
                                      f"use one of {', '.join(_NUMERIC_OPERATORS)}")
            if not _is_number(bound):
                raise self.fail(path, f'"numeric" needs a finite number after "{operator}", got {show(bound)}; '
                                      f'write ["{operator}", 5]')
        if len(operand) == 2:
            operator, bound = operand
            if operator == "=":
                leaf.numbers.add(bound)
            elif operator in ("<", "<="):
                leaf.ranges.append((None, False, bound, operator == "<="))
            else:
                leaf.ranges.append((bound, operator == ">=", None, False))
            return
        lower_op, lower, upper_op, upper = operand
        if lower_op not in (">", ">=") or upper_op not in ("<", "<="):
            raise self.fail(path, '"numeric" with two comparisons needs the lower bound (">" or ">=") first and '
                                  f'the upper bound ("<" or "<=") second, got {show(operand)}; {example}')
        if lower > upper or (lower == upper and (lower_op, upper_op) != (">=", "<=")):
            raise self.fail(path, f'"numeric" range {show(operand)} is empty because its lower bound '
                                  f"{show(lower)} is not below its upper bound {show(upper)}; "
                                  "swap or correct the bounds")
        leaf.ranges.append((lower, lower_op == ">=", upper, upper_op == "<="))

    def anything_but(self, operand: object, path: str, leaf: LeafBuilder) -> object:
        """Compile anything-but, which matches every present scalar that is not excluded."""
        leaf.indexable = False
        leaf.all_literals = True
        fix = ('write {"anything-but": "stopped"}, {"anything-but": ["stopped", "failed"]}, '
               '{"anything-but": [100, 200]} or {"anything-but": {"prefix": "init"}}')
        if isinstance(operand, dict):
            return self.anything_but_operator(operand, path, leaf, fix)
        values = operand if isinstance(operand, list) else [operand]
        if values and all(isinstance(value, str) for value in values):
            excluded_strings = frozenset(values)
            leaf.string_tests.append(lambda value: value not in excluded_strings)
            leaf.all_numbers = True
        elif values and all(_is_number(value) for value in values):
            excluded_numbers = frozenset(values)
            leaf.number_tests.append(lambda value: value not in excluded_numbers)
            leaf.all_strings = True
        else:
            raise self.fail(path, '"anything-but" needs a string, a number, a list of only strings or only numbers, '
                                  f"or an object with prefix, suffix, equals-ignore-case or wildcard, "
                                  f"got {show(operand)}; {fix}")
        self.count(path, len(values) - 1)
        return None

    def anything_but_operator(self, operand: dict[str, Any], path: str, leaf: LeafBuilder, fix: str) -> None:
        names = ("prefix", "suffix", "equals-ignore-case", "wildcard")
        if len(operand) != 1 or next(iter(operand)) not in names:
            raise self.fail(path, f'"anything-but" takes one of {", ".join(names)} as a nested operator, '
                                  f"got {show(operand)}; {fix}")
        (name, value), = operand.items()
        inner = f"{path}.anything-but"
        leaf.all_numbers = True
        if name in ("prefix", "suffix"):
            text = self.string(name, value, inner)
            if name == "prefix":
                leaf.string_tests.append(lambda candidate: not candidate.startswith(text))
            else:
                leaf.string_tests.append(lambda candidate: not candidate.endswith(text))
            return
        values = value if isinstance(value, list) and value else [value]
        self.count(inner, len(values) - 1)
        if name == "equals-ignore-case":
            folded = frozenset(self.string(name, item, inner, "Stopped").casefold() for item in values)
            leaf.string_tests.append(lambda candidate: candidate.casefold() not in folded)
            return
        tests = tuple(wildcard_test(self.wildcard_segments(item, inner)) for item in values)
        leaf.string_tests.append(lambda candidate: not any(test(candidate) for test in tests))


_OPERATOR_HANDLERS: dict[str, Callable[[Compiler, Any, str, LeafBuilder], object]] = {
    "anything-but": Compiler.anything_but,
    "cidr": Compiler.cidr,
    "equals-ignore-case": Compiler.equals_ignore_case,
    "exists": Compiler.exists,
    "numeric": Compiler.numeric,
    "prefix": Compiler.prefix,
    "suffix": Compiler.suffix,
    "wildcard": Compiler.wildcard,
}
