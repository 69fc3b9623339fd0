"""YAML loading that keeps a line number on every node.

`yaml.safe_load` throws positions away, so a validator built on it can only say "rules[2] is
wrong", never where. We compose the document (`yaml.compose`-style, via SafeLoader) and turn it
into a small tree of `YNode`s that carry the constructed Python value *and* the 1-based line and
column of each key and value. Scalars are still constructed by PyYAML's safe constructors, so
`0x4547` is an int and `"16MiB"` a string exactly as `safe_load` would give.

Problems that are about the YAML itself rather than the schema (syntax errors, duplicate keys,
non-string keys, documents too large to walk) are returned as `YamlProblem`s; the schema
checker turns them into `ConfigIssue`s. Nothing here raises for bad input except `YamlSyntaxError`,
which carries the line and column PyYAML reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

# A document whose walk visits more nodes than this is refused: aliases let a few lines expand
# into an exponential tree ("billion laughs"), and a recursive alias into an infinite one.
MAX_NODES = 200_000


@dataclass
class YNode:
    """One YAML node with its position.

    kind is "map", "seq" or "scalar". For a map, `value` is dict[str, YNode] in document order
    and `key_lines` gives the line of each key (an unknown key is reported on its own line, not
    on the map's). For a seq, `value` is list[YNode]. For a scalar, the constructed Python value
    (str, int, float, bool, None, datetime...)."""

    kind: str
    value: Any
    line: int
    col: int
    key_lines: dict[str, int] = field(default_factory=dict)

    def plain(self) -> Any:
        """The same value `yaml.safe_load` would have produced (positions dropped)."""
        if self.kind == "map":
            return {k: v.plain() for k, v in self.value.items()}
        if self.kind == "seq":
            return [v.plain() for v in self.value]
        return self.value

    @property
    def type_name(self) -> str:
        """How the node reads to a person, for "expected a list, got a string" messages."""
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        v = self.value
        if v is None:
            return "nothing (null)"
        if isinstance(v, bool):
            return "a boolean"
        if isinstance(v, int):
            return "an integer"
        if isinstance(v, float):
            return "a number"
        if isinstance(v, str):
            return "a string"
        return f"a {type(v).__name__}"


@dataclass(frozen=True)
class YamlProblem:
    line: int
    col: int
    message: str


class YamlSyntaxError(Exception):
    """The text is not valid YAML (or uses a tag the safe loader refuses)."""

    def __init__(self, line: int | None, col: int | None, message: str):
        self.line, self.col, self.message = line, col, message
        super().__init__(message)


def load(text: str) -> tuple[YNode | None, list[YamlProblem]]:
    """Parse one YAML document. Returns (root or None for an empty document, problems).

    Raises YamlSyntaxError (with 1-based line/col when PyYAML knows them) for malformed YAML."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:   # the reader refuses control characters up front
        raise YamlSyntaxError(None, None, str(exc).replace("\n", " ")) from None
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None, []
            walker = _Walker(loader)
            root = walker.convert(node)
            return root, walker.problems
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            msg = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            if mark is None:
                raise YamlSyntaxError(None, None, msg) from None
            raise YamlSyntaxError(mark.line + 1, mark.column + 1, msg) from None
        except yaml.YAMLError as exc:  # e.g. reader errors on control characters
            raise YamlSyntaxError(None, None, str(exc).replace("\n", " ")) from None
        except RecursionError:
            raise YamlSyntaxError(None, None, "document is nested too deeply") from None
    finally:
        loader.dispose()


class _TooLarge(Exception):
    pass


class _Walker:
    def __init__(self, loader: yaml.SafeLoader):
        self.loader = loader
        self.problems: list[YamlProblem] = []
        self.budget = MAX_NODES

    def convert(self, node: yaml.Node) -> YNode:
        try:
            return self._convert(node)
        except _TooLarge:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            self.problems.append(YamlProblem(
                line, col, f"document expands to more than {MAX_NODES} nodes (recursive or "
                           f"exploding aliases?)"))
            return YNode("scalar", None, line, col)

    def _convert(self, node: yaml.Node) -> YNode:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLarge()
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)   # resolve "<<: *anchor" merge keys
            out: dict[str, YNode] = {}
            key_lines: dict[str, int] = {}
            for knode, vnode in node.value:
                kline, kcol = knode.start_mark.line + 1, knode.start_mark.column + 1
                key = self.loader.construct_object(knode, deep=True) \
                    if isinstance(knode, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self.problems.append(YamlProblem(kline, kcol, "mapping keys must be strings"))
                    continue
                if key in out:
                    self.problems.append(YamlProblem(
                        kline, kcol, f"duplicate key {key!r} (first on line {key_lines[key]})"))
                    continue
                out[key] = self._convert(vnode)
                key_lines[key] = kline
            return YNode("map", out, line, col, key_lines)
        if isinstance(node, yaml.SequenceNode):
            return YNode("seq", [self._convert(v) for v in node.value], line, col)
        return YNode("scalar", self.loader.construct_object(node, deep=True), line, col)
