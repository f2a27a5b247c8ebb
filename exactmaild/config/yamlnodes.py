"""Reading the YAML document as located nodes, safely.

This module owns:

- composing the text with the safe loader only, under hard limits: a size
  cap before parsing, a cap on aliases (billion laughs) and on nesting;
- the node helpers every check uses: line numbers, null tests, how a wrong
  value is quoted back, the raw text of a scalar;
- `Map`, one mapping checked against the keys its section accepts (with
  `<<` merges and "did you mean" for unknown keys), and `Checker`, which
  collects every problem and warning while the document is walked.

The walk works on YAML *nodes* rather than constructed Python values for two
reasons: nodes carry line numbers, and the raw text of a scalar is what the
user typed. YAML 1.1 would otherwise turn `at: 12:00` into the integer 720
(base-60) and `every: off` into False.

Internal to the configuration modules; the public API is `exactmaild.config.load`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exactmaild.config.schema import INLINE_SECRETS, SECTIONS, TOP_KEYS
from exactmaild.config.values import suggest
from exactmaild.core.errors import Problem

T = TypeVar("T")

# Hard limits against hostile or broken input. A real configuration is a few
# KiB with no aliases at all; these are far above that and far below harm.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_ALIASES = 20  # billion laughs needs many aliases; a handful of `<<: *x` is fine
MAX_DEPTH = 32  # PyYAML's composer recurses per level: stop long before Python's limit

TAG = "tag:yaml.org,2002:"


class _Hostile(Exception):
    """The document trips a hard limit; composition stops at once."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _Loader(yaml.SafeLoader):
    """The safe loader, counting aliases and nesting depth while composing.

    Aliases are counted as they are met, so a billion-laughs document is
    refused after MAX_ALIASES of them without ever expanding anything; the
    depth cap turns `[[[[...` into a Problem instead of a RecursionError.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                mark = self.get_mark()
                raise _Hostile(
                    f"more than {MAX_ALIASES} YAML aliases (*name): refused as a possible "
                    "'billion laughs' attack; write the values out instead",
                    mark.line + 1 if mark else 0,
                )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.get_mark()
                raise _Hostile(
                    f"nested more than {MAX_DEPTH} levels deep: refused",
                    mark.line + 1 if mark else 0,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class Invalid(Exception):
    """A value is wrong; the message says how. Becomes one Problem at the value's line."""


def node_line(node: Node | None) -> int:
    if node is None or node.start_mark is None:
        return 0
    return int(node.start_mark.line) + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == TAG + "null"


def describe(node: Node) -> str:
    """How a wrong value is quoted back: 'abc', a list, a mapping, nothing."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing"
    text = str(node.value)
    if len(text) > 40:
        text = text[:37] + "..."
    return repr(text)


def node_text(node: Node, expected: str) -> str:
    """The raw text of a scalar as typed, or Invalid naming what was expected."""
    if not isinstance(node, ScalarNode) or is_null(node):
        raise Invalid(f"expected {expected}, got {describe(node)}")
    return str(node.value)


def as_str(node: Node) -> str:
    text = node_text(node, "a text value").strip()
    if not text:
        raise Invalid("expected a text value, got an empty one")
    return text


@dataclass
class Map:
    """One mapping of the document, checked against the keys its section accepts."""

    path: str
    line: int
    present: bool = False  # the section was written (even if empty)
    entries: dict[str, tuple[Node, Node]] = field(default_factory=dict)

    def get(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def given(self, key: str) -> bool:
        """The key is present with a non-null value."""
        node = self.get(key)
        return node is not None and not is_null(node)

    def key_line(self, key: str) -> int:
        entry = self.entries.get(key)
        return node_line(entry[0]) if entry else self.line

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


class Checker:
    """Collects every problem and warning while the document is walked."""

    def __init__(self, source: Path) -> None:
        self.file = str(source)
        # Relative paths in the file are relative to the file, not to
        # whatever directory the daemon happened to start in.
        self.source = source.absolute()  # the daemon chdirs to / when it detaches
        self.base = self.source.parent
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def problem(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))

    # -- document ---------------------------------------------------------

    def compose(self, text: str) -> Node | None:
        if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
            self.problem(
                0, "", f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a configuration file"
            )
            return None
        loader: _Loader | None = None
        try:
            # The reader checks for unprintable characters as it is built:
            # construct inside the try so that is a Problem too.
            loader = _Loader(text)
            return loader.get_single_node()
        except _Hostile as exc:
            self.problem(exc.line, "", exc.message)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 0
            what = exc.problem or "invalid YAML"
            if exc.context:
                what = f"{what} ({exc.context})"
            self.problem(line, "", f"YAML syntax error: {what}")
        except yaml.reader.ReaderError as exc:
            position = exc.position if isinstance(exc.position, int) else 0
            line = text.count("\n", 0, position) + 1
            self.problem(line, "", f"YAML cannot contain character {exc.character!r}: {exc.reason}")
        except yaml.YAMLError as exc:
            self.problem(0, "", f"YAML error: {exc}")
        except RecursionError:  # belt and braces: MAX_DEPTH should make this impossible
            self.problem(0, "", "nested too deeply: refused")
        finally:
            if loader is not None:
                loader.dispose()
        return None

    def mapping(
        self,
        node: Node | None,
        path: str,
        allowed: Sequence[str],
        *,
        line: int,
    ) -> Map:
        """Check `node` is a mapping with only `allowed` keys; a missing/null node is empty."""
        result = Map(path=path, line=node_line(node) or line)
        if node is None or is_null(node):
            result.present = node is not None
            return result
        if not isinstance(node, MappingNode):
            self.problem(
                node_line(node),
                path,
                f"expected a mapping (key: value lines), got {describe(node)}",
            )
            return result
        result.present = True
        for key_node, value_node in self._pairs(node, path):
            key = str(key_node.value)
            sub = result.sub(key)
            if key in result.entries:
                first = result.key_line(key)
                self.problem(
                    node_line(key_node), sub, f"given twice (first on line {first}); keep one"
                )
                continue
            if key not in allowed:
                self.problem(node_line(key_node), sub, self._unknown(key, path, allowed))
                continue
            result.entries[key] = (key_node, value_node)
        return result

    def _pairs(self, node: MappingNode, path: str) -> list[tuple[ScalarNode, Node]]:
        """The key/value pairs of a mapping, `<<` merges expanded (explicit keys win)."""
        own: list[tuple[ScalarNode, Node]] = []
        merged: list[tuple[ScalarNode, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or is_null(key_node):
                self.problem(
                    node_line(key_node),
                    path,
                    f"a key must be a plain name, got {describe(key_node)}",
                )
                continue
            if key_node.tag == TAG + "merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self.problem(
                            node_line(value_node), path, "'<<' must merge a mapping (<<: *name)"
                        )
                        continue
                    # One level only: merges inside merged mappings are not
                    # followed, which also keeps a recursive alias finite.
                    merged.extend(
                        (k, v)
                        for k, v in source.value
                        if isinstance(k, ScalarNode) and k.tag != TAG + "merge"
                    )
                continue
            own.append((key_node, value_node))
        names = {str(k.value) for k, _ in own}
        seen: set[str] = set()
        for key_node, value_node in merged:
            name = str(key_node.value)
            if name not in names and name not in seen:
                seen.add(name)
                own.append((key_node, value_node))
        return own

    def _unknown(self, key: str, path: str, allowed: Sequence[str]) -> str:
        where = f"under '{path}'" if path else "at the top level"
        if key.lower() in INLINE_SECRETS:
            instead = INLINE_SECRETS[key.lower()]
            return (
                "secrets are never written in this file: put it in a file readable only by "
                f"the daemon user (chmod 600) and set account.auth.{instead} to its path, "
                "or pass it as a systemd credential (LoadCredential=)"
            )
        hint = suggest(key, allowed)
        if not hint:
            homes = [name for name, keys in SECTIONS.items() if key in keys and name != path]
            if homes:
                hint = f"; {key!r} belongs under '{homes[0]}'"
            elif key in TOP_KEYS and path:
                hint = f"; {key!r} is a top-level key"
        return f"unknown key {key!r} {where}{hint}"

    # -- values -----------------------------------------------------------

    def get(self, m: Map, key: str, convert: Callable[[Node], T], default: T) -> T:
        """The converted value of `key`, or `default` when absent, null or wrong (a Problem)."""
        node = m.get(key)
        if node is None or is_null(node):
            return default
        try:
            return convert(node)
        except Invalid as exc:
            self.problem(node_line(node), m.sub(key), str(exc))
            return default

    def require(self, m: Map, key: str, convert: Callable[[Node], T], what: str) -> T | None:
        if not m.given(key):
            where = m.key_line(key) if key in m.entries else m.line
            self.problem(where, m.sub(key), f"required: {what}")
            return None
        return self.get(m, key, convert, None)

    def items(
        self, m: Map, key: str, convert: Callable[[Node], T], default: Sequence[T]
    ) -> tuple[T, ...] | None:
        """A list of values (a single scalar counts as a list of one); None when wrong."""
        node = m.get(key)
        if node is None or is_null(node):
            return tuple(default)
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        if isinstance(node, MappingNode):
            self.problem(node_line(node), m.sub(key), "expected a list, got a mapping")
            return None
        values: list[T] = []
        ok = True
        for index, item in enumerate(nodes):
            try:
                values.append(convert(item))
            except Invalid as exc:
                self.problem(node_line(item), f"{m.sub(key)}[{index}]", str(exc))
                ok = False
        return tuple(values) if ok else None

    def path(self, node: Node) -> Path:
        text = as_str(node)
        if "\x00" in text:  # possible via "\0" in quotes; the OS would refuse it later
            raise Invalid("a path cannot contain a NUL character")
        path = Path(text)
        if text.startswith("~"):
            try:
                path = path.expanduser()
            except RuntimeError:
                raise Invalid(f"{text!r}: no such user's home directory") from None
        return path if path.is_absolute() else self.base / path

    def warn(self, message: str) -> None:
        self.warnings.append(message)
