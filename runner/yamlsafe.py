"""Safe YAML loading with source positions.

Stricter than ``yaml.safe_load``: aliases and merge keys are refused
(no alias bombs, no hidden sharing), duplicate keys are refused, and the input
size is capped. Every node's position is kept so that later validation errors
can name ``file:line:column``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner.errors import Problem, ValidationError

__all__ = ["DEFAULT_MAX_BYTES", "Located", "check_size", "load_yaml"]

DEFAULT_MAX_BYTES = 1024 * 1024
Path_ = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_UNSET: Any = object()


@functools.cache
def _loader_class() -> Any:
    """The C-accelerated safe loader with YAML 1.2-style booleans: only true/false; yes, no, on, off stay strings.

    Built on first use, so that importing this module (to check a size, or for :class:`Located`) does not
    import PyYAML: a runbook read from the compile cache is never parsed.
    """
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class _BaseLoader(base):  # type: ignore[misc]
        pass

    _BaseLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    _BaseLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return _BaseLoader


def check_size(text: str | bytes, file: str, *, max_bytes: int | None = None) -> None:
    """Refuse a file larger than ``max_bytes`` (default ``RUNBOOK_MAX_FILE_BYTES``, else 1 MiB)."""
    limit = max_bytes if max_bytes is not None else int(os.environ.get("RUNBOOK_MAX_FILE_BYTES", DEFAULT_MAX_BYTES))
    size = len(text.encode() if isinstance(text, str) else text)
    if size > limit:
        raise ValidationError([Problem(f"file is {size} bytes; the limit is {limit} (RUNBOOK_MAX_FILE_BYTES)", file=file)])


@dataclass
class Located:
    """A loaded document and the 1-based (line, column) of every key and value in it."""

    data: Any
    file: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    links: dict[Path_, tuple[Located, Path_]] = field(default_factory=dict)
    """Subtrees of ``data`` written elsewhere (an included file, the runbook's ``defaults:``): path → (where, path there)."""
    included_from: str | None = None
    """``file:line:column`` of the ``include`` that brought this document into a runbook."""

    def resolve(self, path: Path_) -> tuple[Located, Path_]:
        """The document ``path`` was written in, and its path there (following :attr:`links`, longest prefix first)."""
        if self.links:
            for n in range(len(path), -1, -1):
                link = self.links.get(tuple(path[:n]))
                if link is not None:
                    target, there = link
                    return target.resolve((*there, *path[n:]))
        return self, tuple(path)

    def position(self, path: Path_, *, value: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path`` (its key, or with ``value`` its value), or of its nearest ancestor's."""
        located, path = self.resolve(path)
        if located is not self:
            return located.position(path, value=value)
        if value and tuple(path) in self.values:
            return self.values[tuple(path)]
        for n in range(len(path), -1, -1):
            pos = self.positions.get(tuple(path[:n]))
            if pos is not None:
                return pos
        return None, None

    def pydantic_problems(self, base: Path_, exc: Any, *, where: Callable[[Path_], str | None] | None = None,
                          value: Any = _UNSET) -> list[Problem]:  # fmt: skip
        """Located problems for pydantic's ``exc`` about the value at ``base`` of this document.

        Unknown and missing keys point at the key, other errors at the value; the message says what was
        expected and, for a wrong value, what was given. ``where(path)`` labels each problem (default: the
        dotted path). ``value`` is what was validated (default: the document's value at ``base``): the names
        pydantic puts in an error's location for the members of a union are told from real keys with it, and the
        errors of one value against a union's members become one problem.
        """
        if value is _UNSET:
            value = _walk(self.data, base)
        grouped: dict[tuple[Path_, bool], list[str]] = {}
        for err in exc.errors(include_url=False):
            loc = _real_loc(err, value)
            msg, at_value = err["msg"], True
            if err["type"] == "extra_forbidden":
                msg, at_value = f"unknown key '{loc[-1]}'", False
            elif err["type"] == "missing":
                msg, at_value = f"missing required key '{loc[-1]}'", False
            elif err["type"] == "value_error":
                msg = msg.removeprefix("Value error, ")
            elif "input" in err and err["type"] not in ("model_type", "dict_type"):
                shown = repr(err["input"])
                msg += f" (got {shown if len(shown) < 60 else shown[:57] + '...'})"
            messages = grouped.setdefault(((*base, *loc), at_value), [])
            if msg not in messages:
                messages.append(msg)
        out = []
        for (path, at_value), messages in grouped.items():
            label = where(path) if where is not None else (".".join(str(p) for p in path) or None)
            out.append(self.problem(path, _one_of(messages), where=label, value=at_value))
        return out

    def problem(self, path: Path_, message: str, where: str | None = None, *, value: bool = False) -> Problem:
        """A :class:`Problem` located at ``path`` (at its value when ``value`` is true)."""
        located, there = self.resolve(path)
        line, col = located.position(there, value=value)
        return Problem(message=message, file=located.file, line=line, column=col, where=where, included_from=located.included_from)


def _walk(data: Any, path: Path_) -> Any:
    for key in path:
        data = _child(data, key)
        if data is _UNSET:
            break
    return data


def _child(data: Any, key: str | int) -> Any:
    if isinstance(data, dict):
        return data.get(key, _UNSET)
    if isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
        return data[key]
    return _UNSET


def _real_loc(err: Any, value: Any) -> Path_:
    """An error's location without the names pydantic adds for union members and validators."""
    loc = err["loc"]
    keyed = err["type"] in ("extra_forbidden", "missing")
    walk, last = (loc[:-1], loc[-1:]) if keyed and loc else (loc, ())
    out: list[str | int] = []
    for part in walk:
        if value is _UNSET:  # nothing to tell keys from member names by: keep what is not obviously a name
            if not (isinstance(part, str) and part.startswith(("function-", "literal["))):
                out.append(part)
            continue
        child = _child(value, part)
        if child is not _UNSET:
            value = child
            out.append(part)
    return (*out, *last)


_GENERIC = "expected a value of the declared type or a '{{ ... }}' template"


def _one_of(messages: list[str]) -> str:
    """One message for the errors of one value: the alternatives a union accepts, the template one last."""
    if len(messages) > 1 and _GENERIC in messages:
        messages = [m for m in messages if m != _GENERIC]
    return "; or ".join(messages)


class _Refused(Exception):
    def __init__(self, message: str, mark: Any = None, pos: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos if pos is not None else _mark(mark)


def _mark(mark: Any) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


class _Builder:
    """Builds plain data straight from the parser's events, recording positions and refusing aliases, merge keys,
    duplicate and non-scalar keys.

    No node tree is composed first (PyYAML's composer keeps a node, with two marks, per scalar of the document:
    about 12 MiB for a 5000-step runbook, issue 19); an alias is refused where it appears, so it is never expanded.
    """

    def __init__(self, loader: Any, located: Located) -> None:
        import yaml

        self.loader, self.located, self.yaml = loader, located, yaml
        self.anchors: dict[str, Any] = {}  # anchor → the mark where it was set

    def document(self) -> Any:
        """The stream's one document (:data:`_UNSET` if it has none; None for an explicit null one, ``~``)."""
        events = self.yaml.events
        self.loader.get_event()  # stream start
        if self.loader.check_event(events.StreamEndEvent):
            return _UNSET
        start = self.loader.get_event().start_mark  # document start
        data = self.build(())
        self.loader.get_event()  # document end
        if not self.loader.check_event(events.StreamEndEvent):
            found = self.loader.get_event()
            raise self.yaml.composer.ComposerError(
                "expected a single document in the stream", start, "but found another document", found.start_mark
            )
        return data

    def build(self, path: Path_) -> Any:
        events = self.yaml.events
        event = self.loader.get_event()
        if isinstance(event, events.AliasEvent):
            line, col = self.located.position(path)  # its key's, else its nearest ancestor's (as before)
            self._refuse_alias(event, (line, col) if line is not None and col is not None else None)
        at = _mark(event.start_mark)
        self._anchor(event)
        self.located.positions.setdefault(path, at)
        self.located.values[path] = at
        if isinstance(event, events.MappingStartEvent):
            return self._mapping(path)
        if isinstance(event, events.SequenceStartEvent):
            items: list[Any] = []
            while not self.loader.check_event(events.SequenceEndEvent):
                items.append(self.build((*path, len(items))))
            self.loader.get_event()
            return items
        return self._scalar(event)

    def _refuse_alias(self, event: Any, used_at: tuple[int, int] | None) -> None:
        anchored = self.anchors.get(event.anchor)
        if anchored is None:
            raise self.yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
        raise _Refused(  # where the alias is used (the alias itself when it is a key)
            f"YAML aliases are not allowed in runbooks (this refers to the anchor at line {_mark(anchored)[0]})",
            pos=used_at or _mark(event.start_mark),
        )

    def _anchor(self, event: Any) -> None:
        """Remember ``event``'s anchor; one set twice is an error (as PyYAML's composer says)."""
        if event.anchor is None:
            return
        first = self.anchors.get(event.anchor)
        if first is not None:
            raise self.yaml.composer.ComposerError(
                f"found duplicate anchor {event.anchor!r}; first occurrence", first, "second occurrence", event.start_mark
            )
        self.anchors[event.anchor] = event.start_mark

    def _scalar(self, event: Any) -> Any:
        nodes = self.yaml.nodes
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(nodes.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:  # what the constructor would do for a plain string, without its dispatch
            return event.value
        node = nodes.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, path: Path_) -> dict[Any, Any]:
        events = self.yaml.events
        out: dict[Any, Any] = {}
        while not self.loader.check_event(events.MappingEndEvent):
            key_event = self.loader.peek_event()
            if isinstance(key_event, events.AliasEvent):
                self._refuse_alias(self.loader.get_event(), None)
            if not isinstance(key_event, events.ScalarEvent):
                raise _Refused("mapping keys must be plain scalars", key_event.start_mark)
            self.loader.get_event()
            self._anchor(key_event)
            tag = key_event.tag
            if tag is None or tag == "!":
                tag = self.loader.resolve(self.yaml.nodes.ScalarNode, key_event.value, key_event.implicit)
            if tag == "tag:yaml.org,2002:merge":
                raise _Refused("YAML merge keys (<<) are not allowed in runbooks", key_event.start_mark)
            key = self._scalar(key_event)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise _Refused("mapping keys must be plain scalars", key_event.start_mark)
            if key in out:
                first = self.located.positions.get((*path, str(key)))
                at = f" (first defined at line {first[0]})" if first else ""
                raise _Refused(f"duplicate key '{key}'{at}", key_event.start_mark)
            child = (*path, str(key))  # one tuple for the key's position and the value's
            self.located.positions[child] = _mark(key_event.start_mark)
            out[key] = self.build(child)
        self.loader.get_event()
        return out


def load_yaml(text: str | bytes, file: str, *, max_bytes: int | None = None) -> Located:
    """Parse one YAML document from ``text`` (read from ``file``) safely.

    Raises :class:`ValidationError` with file, line and column on any problem.
    """
    import yaml

    check_size(text, file, max_bytes=max_bytes)
    located = Located(data=None, file=file)
    loader = _loader_class()(text)
    try:
        data = _Builder(loader, located).document()
        located.data = {} if data is _UNSET else data
    except _Refused as exc:
        raise ValidationError([Problem(exc.message, file=file, line=exc.pos[0], column=exc.pos[1])]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos: tuple[int | None, int | None] = _mark(mark) if mark is not None else (None, None)
        line, col = pos
        what = exc.problem or "invalid YAML"
        if exc.context:
            what = f"{exc.context}: {what}"
        raise ValidationError([Problem(f"YAML syntax error: {what}", file=file, line=line, column=col)]) from None
    except yaml.YAMLError as exc:
        raise ValidationError([Problem(f"YAML error: {exc}", file=file)]) from None
    finally:
        loader.dispose()
    return located
