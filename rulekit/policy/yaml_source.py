"""YAML with positions: every value's line and column, so a policy error can point at its source."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rulekit.errors import PolicyError, RulekitError

Position = tuple[int, int]  # 1-based line, 1-based column
PathKey = tuple[Any, ...]


class YamlDocument:
    """Plain Python data plus the position of every mapping value and list item, keyed by path."""

    def __init__(self, data: Any, positions: dict[PathKey, Position], path: str):
        self.data = data
        self.positions = positions
        self.path = path

    def position(self, key: PathKey) -> Position:
        """The position of ``key``, or of its nearest ancestor that has one."""
        key = tuple(key)
        while key not in self.positions and key:
            key = key[:-1]
        return self.positions.get(key, (1, 1))

    def error(self, key: PathKey, message: str) -> RulekitError:
        line, column = self.position(key)
        return RulekitError(message, self.path, line, column)


def load_yaml(path: str | Path) -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys are PolicyErrors with positions."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([RulekitError(f"cannot read policy: {exc.strerror}", path)]) from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: str) -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError([RulekitError("the file is empty", path, 1, 1)])
        positions: dict[PathKey, Position] = {}
        problems: list[RulekitError] = []
        data = _build(loader, node, (), positions, problems, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = f"not valid YAML: {exc.problem or exc.context}"
        raise PolicyError([RulekitError(message, path, line, column)]) from None
    finally:
        loader.dispose()
    if problems:
        raise PolicyError(problems)
    return YamlDocument(data, positions, path)


def _build(loader: yaml.SafeLoader, node: yaml.Node, key: PathKey,
           positions: dict[PathKey, Position], problems: list[RulekitError], path: str) -> Any:
    positions[key] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            name = loader.construct_object(key_node, deep=True)
            if name in out:
                problems.append(RulekitError(f"duplicate key {name!r}", path,
                                             key_node.start_mark.line + 1,
                                             key_node.start_mark.column + 1))
            out[name] = _build(loader, value_node, key + (name,), positions, problems, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, key + (index,), positions, problems, path)
                for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
