"""Generation of one Python function per pattern, to evaluate it with fewer calls.

The closure tree of pattern_tree handles every event shape, but costs a call per object
level and per leaf. The generated function tests all levels in one body for the usual
event, where each object of the pattern meets an object in the event. Where the event has
an array, a scalar or nothing instead, it calls that object's closure, so the result is
always the one of ObjectNode.match_fields. Exact-string leaves are tested inline.

Pattern keys and values never become source text: the source names them through
constants of the function's namespace.
"""

from __future__ import annotations

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
    source = "\n".join(generator.lines)
    exec(compile(source, "<event pattern>", "exec"), generator.namespace)  # noqa: S102 - source built above
    function: Matcher = generator.namespace["match_fields"]
    return function
