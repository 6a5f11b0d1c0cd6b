"""Safe YAML for grids and specs: plain data only, bounded in size, no duplicate keys.

PyYAML's safe loader builds no Python objects, but it still accepts what a config file never
needs and a hostile one uses: aliases that expand a few hundred bytes into billions of values
(anything that walks the result, even an error message, then runs out of memory), a key
given twice (the last one silently wins), and bytes that are not text at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from tasks.errors import ConfigError
from tasks.messages import bounded_repr, shorten

# A grid or dataset spec is a few kilobytes; these limits leave ample room.
MAX_YAML_BYTES = 1_000_000
# Values in the document once every alias is expanded (each scalar, list and mapping counts).
MAX_YAML_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _YamlRefused(yaml.YAMLError):
    pass


class BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses alias bombs, recursive aliases and duplicate keys."""

    def compose_document(self) -> Node:
        node = super().compose_document()
        expanded_size(node, MAX_YAML_VALUES)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as error:
            # e.g. a 5000-digit integer or the date 2001-02-30: say where, not a traceback
            raise ConstructorError(
                None, None, f"cannot read this value: {error}", node.start_mark
            ) from None


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_size(root: Node, limit: int) -> int:
    """How many values `root` holds with every alias expanded, refused past `limit`.

    Each node is counted once and its count reused wherever an alias points at it, so the
    work is proportional to the file, not to the expansion; a node reached again while its
    own children are being counted is an alias to itself.
    """
    counts: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        key = id(node)
        if key in counts:
            continue
        children = _children(node)
        if children_counted:
            open_nodes.discard(key)
            counts[key] = 1 + sum(counts[id(child)] for child in children)
            if counts[key] > limit:
                raise _YamlRefused(
                    f"the value starting on line {node.start_mark.line + 1} holds more than "
                    f"{limit:,} values once its aliases are expanded: refused"
                )
            continue
        if key in open_nodes:
            raise _YamlRefused(
                f"the alias on line {node.start_mark.line + 1} refers to itself "
                "(a recursive structure); write the values out instead"
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(children) if id(child) not in counts)
    return counts[id(root)]


def refuse_duplicate_keys(loader: yaml.SafeLoader, node: MappingNode) -> None:
    """A key given twice in one mapping is an error, not 'the last one wins'."""
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *base` then `key: value` overrides on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            earlier = first_line.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:
            continue  # an unhashable key: the constructor refuses it with its own message
        if earlier != key_node.start_mark.line + 1:
            raise _YamlRefused(
                f"key {bounded_repr(key)} appears twice in one mapping "
                f"(lines {earlier} and {key_node.start_mark.line + 1}): keep one of them"
            )


def parse_yaml(text: str, source: str) -> Any:
    """The data in `text` (one YAML document), or a ConfigError naming `source`."""
    loader = BoundedSafeLoader(text)
    loader.name = source  # PyYAML's marks then say `in "grids/x.yaml", line 3, column 5`
    try:
        return loader.get_single_data()
    except _YamlRefused as error:
        raise ConfigError(f"{source}: {shorten(str(error), 500)}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {shorten(str(error), 500)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply to read") from None
    finally:
        loader.dispose()


def read_yaml_text(path: Path) -> str:
    """The file's text: refused if missing, larger than MAX_YAML_BYTES or not UTF-8."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{path} is more than {MAX_YAML_BYTES:,} bytes, more than a grid or spec needs: "
            "is it the right file?"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}): give a YAML file"
        ) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML mapping safely (plain data, bounded, no duplicate keys), naming the file."""
    raw = parse_yaml(read_yaml_text(path), str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(raw).__name__}")
    return raw
