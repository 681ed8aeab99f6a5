"""YAML documents with positions, so that errors can name the line to edit.

PyYAML's loaded data has no positions; its composed node tree does. Both
motoko.yaml (:mod:`motoko.config`) and bd.yaml (:mod:`motoko.study.schema`)
use these helpers to point at ``file:line``.
"""

from __future__ import annotations

from typing import Any

import yaml

from motoko.errors import MotokoError


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


def check_duplicates(node: yaml.Node | None, source: str, error: type[MotokoError], what: str = "key") -> None:
    """Refuse a key written twice in one mapping (PyYAML silently keeps the last one)."""
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
            check_duplicates(value_node, source, error, what)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            check_duplicates(item, source, error, what)
