"""YAML with positions: every value's line and column, so a policy error can point at its source.

A policy file may be anything (a half-written swap, a binary, a hostile file), so it is read
within bounds before any of it is built: at most ``MAX_BYTES`` bytes of UTF-8 text, nested at most
``MAX_DEPTH`` deep, at most ``MAX_NODES`` values once every alias is expanded (anchors and aliases
can make a few lines stand for billions of values). The bounds are checked on the parser's event
stream, which libyaml produces without recursion, before the recursive composer and builder run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rulekit.errors import PolicyError, RulekitError

Position = tuple[int, int]  # 1-based line, 1-based column
PathKey = tuple[Any, ...]

MAX_BYTES = 1_000_000   # a policy is a few KB; the default one is about 14 KB
MAX_DEPTH = 32          # a policy nests 4 deep (params > name > default > list)
MAX_NODES = 20_000      # values after expanding aliases; the default policy has about 700

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"


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
    """Parse one YAML document; anything that is not a small YAML text is a PolicyError."""
    path = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)  # never more, whatever the file (or device) is
    except OSError as exc:
        raise PolicyError([RulekitError(f"cannot read policy: {exc.strerror}", path)]) from None
    if len(raw) > MAX_BYTES:
        raise _refused(f"the file is larger than {MAX_BYTES:,} bytes (a policy is a few KB): "
                       "refused unread", path)
    return parse_yaml(decode_text(raw, path), path)


def decode_text(raw: bytes, path: str) -> str:
    """UTF-8 text (a byte-order mark is dropped); NUL bytes or other encodings are refused."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raise _refused("binary content (a NUL byte), not a YAML text file", path, _line(raw, nul))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refused(f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the policy as UTF-8",
                       path, _line(raw, exc.start)) from None
    return text.removeprefix("\ufeff")


def parse_yaml(text: str, path: str) -> YamlDocument:
    try:
        _check_bounds(text, path)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise _refused("the file is empty", path, 1, 1)
            positions: dict[PathKey, Position] = {}
            problems: list[RulekitError] = []
            data = _build(loader, node, (), positions, problems, path)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = f"not valid YAML: {exc.problem or exc.context}"
        raise PolicyError([RulekitError(message, path, line, column)]) from None
    except yaml.YAMLError as exc:  # the reader's errors (control characters) carry no mark
        position = getattr(exc, "position", None)
        line = None
        if isinstance(position, int):  # libyaml counts bytes of the UTF-8 text, PyYAML characters
            line = (text.encode("utf-8")[:position].count(b"\n") if _Loader is not yaml.SafeLoader
                    else text[:position].count("\n")) + 1
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise _refused(f"not valid YAML: {reason}", path, line) from None
    if problems:
        raise PolicyError(problems)
    return YamlDocument(data, positions, path)


def _check_bounds(text: str, path: str) -> None:
    """Refuse deep nesting and alias expansion from the event stream, before any node is built.

    Each anchor's expanded size is known when its node ends, so an alias adds that size: the
    expanded total of the whole document in one linear pass, however the aliases multiply.
    """
    sizes: dict[str, int] = {}
    open_anchors: set[str] = set()
    stack: list[tuple[str | None, int]] = []  # (anchor, size so far) of each open collection
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _refused(f"nested more than {MAX_DEPTH} deep (not a policy)", path,
                               *_mark(event))
            stack.append((event.anchor, 1))
            if event.anchor:
                open_anchors.add(event.anchor)
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            if anchor:
                open_anchors.discard(anchor)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                raise _refused(f"the alias *{event.anchor} refers to itself (a cycle)", path,
                               *_mark(event))
            anchor, size = None, sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        else:
            continue
        if anchor:
            sizes[anchor] = size
        if stack:
            stack[-1] = (stack[-1][0], stack[-1][1] + size)
        else:
            total += size
        if total + sum(s for _, s in stack) > MAX_NODES or size > MAX_NODES:
            raise _refused(f"more than {MAX_NODES:,} values once aliases are expanded (anchors "
                           "and aliases can multiply a few lines into millions): not a policy",
                           path, *_mark(event))


def _build(loader, node: yaml.Node, key: PathKey, positions: dict[PathKey, Position],
           problems: list[RulekitError], path: str) -> Any:
    positions[key] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            name = _text_key(key_node)
            if name is None:
                problems.append(RulekitError("keys must be text (a name), not "
                                             f"{_kind(loader, key_node)}", path,
                                             key_node.start_mark.line + 1,
                                             key_node.start_mark.column + 1))
                continue
            if name in out:
                problems.append(RulekitError(f"duplicate key {name!r}", path,
                                             key_node.start_mark.line + 1,
                                             key_node.start_mark.column + 1))
            out[name] = _build(loader, value_node, key + (name,), positions, problems, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, key + (index,), positions, problems, path)
                for index, item in enumerate(node.value)]
    if node.tag == _BOOL_TAG and node.value.lower() not in ("true", "false"):
        # YAML 1.2: only true/false are booleans; yes/no/on/off stay words (so `off` is "off").
        return node.value
    return loader.construct_object(node, deep=True)


def _text_key(node: yaml.Node) -> str | None:
    """The key's text, or None when it is not a plain name (a list, a number, null...)."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    if node.tag == "tag:yaml.org,2002:str" or (node.tag == _BOOL_TAG
                                              and node.value.lower() not in ("true", "false")):
        return node.value
    return None


def _kind(loader, node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(loader.construct_object(node))


def _mark(event: yaml.Event) -> tuple[int, int]:
    return event.start_mark.line + 1, event.start_mark.column + 1


def _line(raw: bytes, offset: int) -> int:
    return raw[:offset].count(b"\n") + 1


def _refused(message: str, path: str, line: int | None = None,
             column: int | None = None) -> PolicyError:
    return PolicyError([RulekitError(message, path, line, column)])
