"""YAML documents with positions, so that errors can name the line to edit.

PyYAML's loaded data has no positions; its composed node tree does. Both
motoko.yaml (:mod:`motoko.config`) and bd.yaml (:mod:`motoko.study.bd_yaml`)
use these helpers to point at ``file:line``.
"""

from __future__ import annotations

from typing import Any

import yaml

from motoko.errors import MotokoError

#: Most values (scalars, lists, mappings) a document may hold once its aliases
#: are expanded: a few hundred bytes of nested aliases (a "billion laughs")
#: must fail with a message, not fill the memory or burn minutes of CPU.
MAX_YAML_VALUES = 100_000


class Positions:
    """Maps a key path of a document (``("job", "x")``) to ``file:line``."""

    def __init__(self, source: str, root: yaml.Node | None, default_line: int | None = None):
        self.source = source
        self.root = root
        self.default_line = default_line

    def __call__(self, *path: Any) -> str:
        """Return ``source:line`` of the deepest part of ``path`` found (keys' lines)."""
        node, line = self.root, self.default_line
        for step in path:
            found = self._child(node, step)
            if found is None:
                break
            key_node, node = found
            line = key_node.start_mark.line + 1
        return f"{self.source}:{line}" if line else self.source

    at = __call__

    @staticmethod
    def _child(node: yaml.Node | None, step: Any) -> tuple[yaml.Node, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(step):
                    return key_node, value_node
        if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            return node.value[step], node.value[step]
        return None


def expanded_size(node: yaml.Node, limit: int = MAX_YAML_VALUES) -> int:
    """How many values ``node`` holds with its aliases expanded (counting stops past ``limit``).

    Linear in the document's size: an aliased node is counted once and its
    count reused, however often it is referred to.
    """
    sizes: dict[int, int] = {}

    def size(current: yaml.Node) -> int:
        known = sizes.get(id(current))
        if known is not None:
            return known
        sizes[id(current)] = limit + 1  # a node inside itself (a recursive alias) never ends
        total = 1
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[id(current)] = min(total, limit + 1)
        return sizes[id(current)]

    return size(node)


def check_size(node: yaml.Node | None, where: str, error: type[MotokoError], limit: int = MAX_YAML_VALUES) -> None:
    """Refuse a document whose aliases expand past ``limit`` values (before it is built)."""
    if node is not None and expanded_size(node, limit) > limit:
        raise error(
            f"the YAML holds more than {limit} values once its aliases (*name) are expanded",
            where=where,
            hint="write the values out instead of nesting aliases (the limit is MAX_YAML_VALUES)",
        )


def load_bounded(text: str, where: str, error: type[MotokoError]) -> Any:
    """``yaml.safe_load`` that refuses alias bombs before building anything.

    Raises:
        yaml.YAMLError: for a syntax error (callers word it with its position).
        MotokoError: ``error`` when aliases expand past :data:`MAX_YAML_VALUES`.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        check_size(node, where, error)
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def check_duplicates(node: yaml.Node | None, source: str, error: type[MotokoError], what: str = "key") -> None:
    """Refuse a key written twice in one mapping (PyYAML silently keeps the last one).

    Each node is checked once, however many aliases refer to it.
    """
    _check_duplicates(node, source, error, what, set())


def _check_duplicates(node: yaml.Node | None, source: str, error: type[MotokoError], what: str, done: set[int]) -> None:
    if node is None or id(node) in done:
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen and key_node.value != "<<":
                    raise error(
                        f"{what} {key_node.value!r} appears twice in the same mapping",
                        where=f"{source}:{key_node.start_mark.line + 1}",
                        hint="keep one of them",
                    )
                seen.add(key_node.value)
            _check_duplicates(value_node, source, error, what, done)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, source, error, what, done)
