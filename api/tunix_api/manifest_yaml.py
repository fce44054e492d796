"""TunixRun manifests as YAML: read as strictly as ``kubectl apply`` and the API server read them,
written (as JSON, which is YAML) so that they read back the same.

Numbers follow kubectl's reader too: ``1e-8`` is a float (PyYAML, following YAML 1.1, reads a
string there, which a strictly typed field would then refuse). :func:`dump_json` writes strings
quoted, so ``"1e3"`` stays a string (the operator writes the trainer's ``run.yaml`` with it).

PyYAML's ``safe_load`` keeps the last of two equal keys and expands aliases without limit (a
"billion laughs" document of a few hundred bytes becomes gigabytes). :func:`load` refuses both:
a duplicate key names the key and both lines (kubectl silently keeps the last value), and a
document whose aliases expand past ``max_bytes`` (by default the API server's object size
limit) is refused before anything is built. A recursive alias is refused, and so is nesting
deeper than ``MAX_DEPTH`` (PyYAML composes recursively: a few hundred levels would otherwise end
in a RecursionError).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tunix_api.names import MAX_OBJECT_BYTES

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Floats with an exponent but no dot (1e-8, 1e3) or no exponent sign (1.5e3): strings to PyYAML
# (YAML 1.1), floats to kubectl's go-yaml.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$")
MAX_DEPTH = 100  # nested collections; a TunixRun needs about 10 (affinity is the deepest)


class StrictYAMLError(yaml.YAMLError):
    """A document this reader refuses though PyYAML alone would read it; ``line`` is 1-based."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys in a mapping (merge keys ``<<`` excepted) and
    nesting deeper than ``MAX_DEPTH``."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise StrictYAMLError(f"nested deeper than {MAX_DEPTH} levels", line)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. !!timestamp 2024-99-99
            raise StrictYAMLError(f"cannot read this value: {exc}", node.start_mark.line + 1) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # merged keys may be overridden: that is what a merge is for
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise StrictYAMLError(f"duplicate key {key!r} (first at line {seen[key]})", line)
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))


def lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in ``text`` (JSON and YAML allow the escape ``\\ud800``; it
    cannot be written as UTF-8), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


# What JSON leaves as it is but a YAML 1.1 reader (PyYAML) refuses (DEL, the C1 controls, U+FFFE, U+FFFF)
# or reads as a line break inside a quoted string (NEL, U+2028, U+2029); and the byte-order mark. A
# \uXXXX escape of them means the same in JSON and YAML.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def dump_json(document: Any) -> str:
    """Indented JSON of ``document`` (keys in their order) that :func:`load` and ``json.loads`` both
    read back equal. JSON is YAML, and a fifth of the CPU of PyYAML's writer (the operator writes one
    per attempt it starts; docs/PERFORMANCE.md, "Sixth pass")."""
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def expanded_size(root: Node, limit: int) -> int:
    """Bytes of the scalars of ``root`` with every alias expanded, plus one per node.

    Each distinct node is measured once (aliases share their anchor's node), so this takes time
    proportional to the document, not to its expansion. Raises StrictYAMLError for a recursive
    alias, or once the size passes ``limit``.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliased = False  # a node met twice: the document uses aliases

    def size(node: Node) -> int:
        nonlocal aliased
        key = id(node)
        if key in sizes:
            aliased = True
            return sizes[key]
        if key in active:
            raise StrictYAMLError("recursive alias (a node that contains itself)", node.start_mark.line + 1)
        active.add(key)
        if isinstance(node, ScalarNode):
            total = len(node.value.encode("utf-8", "surrogatepass")) + 1
        elif isinstance(node, SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:  # MappingNode
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > limit:
            what = "aliases expand the document past" if aliased else "the document is larger than"
            raise StrictYAMLError(
                f"{what} {limit:,} bytes, the API server's object size limit", node.start_mark.line + 1
            )
        sizes[key] = total
        return total

    return size(root)


def load(text: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> Any:
    """The single document in ``text`` (None if empty); raises ``yaml.YAMLError``."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, max_bytes)
        return loader.construct_document(node)
    finally:
        loader.dispose()
