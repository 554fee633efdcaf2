"""``include:``: shared defaults and step lists from other files on the runbook search path.

Two places take an include, each with one meaning::

    include: [_shared/lb.yaml]          # top level: the file's `defaults:` (the runbook's own defaults win)
    steps:
      - include: _shared/health.yaml    # in `steps`: the file's `steps:`, spliced in here
      - id: restart
        ...

An included file (a *fragment*) holds ``defaults``, ``steps``, ``include`` and ``description``, and no ``name``;
put fragments in a directory or file whose name starts with ``_`` so the catalog does not take them for runbooks.

Safety: a path is relative (no ``..``, not absolute) and ends in ``.yaml``/``.yml``; it is looked up next to
the including file, then in each search-path directory, and must resolve (symlinks followed) inside a
search-path directory. Fragments go through the same safe loader as runbooks (no aliases, no duplicate keys,
``RUNBOOK_MAX_FILE_BYTES`` per file); at most :data:`MAX_INCLUDES` includes, :data:`MAX_DEPTH` levels and
:data:`MAX_STEPS` steps per runbook; a cycle is an error naming the chain. Every value keeps its file, line and
column, and a problem inside a fragment also names the include that brought it in.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from runner.defaults import merge_tracked
from runner.errors import Problem, ValidationError
from runner.yamlsafe import Located

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MAX_DEPTH", "MAX_INCLUDES", "MAX_STEPS", "expand_includes", "include_roots", "uses_includes"]

MAX_INCLUDES = 64
MAX_DEPTH = 8
MAX_STEPS = 1000
FRAGMENT_KEYS = ("description", "defaults", "steps", "include")
Path_ = tuple[str | int, ...]


def include_roots(search: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The directories includes may come from: each search-path directory (a file entry: its directory)."""
    out: list[Path] = []
    for entry in search:
        path = Path(entry)
        root = path if path.is_dir() else path.parent
        real = root.resolve()
        if real not in out:
            out.append(real)
    return out


def uses_includes(data: Any) -> bool:
    """True if a runbook document has a top-level ``include`` or an ``include`` item in its steps."""
    if not isinstance(data, dict):
        return False
    steps = data.get("steps")
    return "include" in data or (isinstance(steps, list) and any(isinstance(s, dict) and "include" in s for s in steps))


def expand_includes(located: Located, roots: Sequence[Path]) -> tuple[Located, list[Problem]]:
    """``located``'s document with its includes expanded (a new :class:`Located` linking every value to where
    it was written), and the problems found. Without includes, ``located`` itself."""
    if not uses_includes(located.data):
        return located, []
    return _Expander(located, roots).run()


class _Expander:
    def __init__(self, root: Located, roots: Sequence[Path]) -> None:
        self.root, self.roots = root, [Path(r).resolve() for r in roots]
        self.problems: list[Problem] = []
        self.count = 0
        self.parsed: dict[Path, Located | None] = {}
        root_file = Path(root.file)
        self.root_real = root_file.resolve() if root_file.is_file() else None

    def run(self) -> tuple[Located, list[Problem]]:
        data: dict[str, Any] = self.root.data
        out = {k: v for k, v in data.items() if k != "include"}
        result = Located(data=out, file=self.root.file, positions=self.root.positions, values=self.root.values)
        stack = [self.root_real] if self.root_real is not None else []
        defaults, links = self._defaults_of(self.root, stack)
        if defaults:
            out["defaults"] = defaults
            result.links.update(links)
        if isinstance(data.get("steps"), list):
            steps = self._steps_of(self.root, ("steps",), stack)
            out["steps"] = [item for item, _, _ in steps]
            for k, (_, where, path) in enumerate(steps):
                result.links[("steps", k)] = (where, path)
        return result, self.problems

    # ------------------------------------------------------------------ defaults

    def _defaults_of(self, doc: Located, stack: list[Path]) -> tuple[dict[str, Any], dict[Path_, tuple[Located, Path_]]]:
        """The defaults ``doc`` brings: those of its top-level includes, in order, then its own on top."""
        merged: dict[str, Any] = {}
        links: dict[Path_, tuple[Located, Path_]] = {}
        own = doc.data.get("defaults")
        if own is not None and not isinstance(own, dict):
            if doc is not self.root:
                self._problem(doc, ("defaults",), "expected 'defaults' to map step types to their default config")
            return {}, links  # the root's own is reported by the compiler, where it stays
        for at, ref in self._refs(doc, ("include",)):
            fragment, inner = self._load(doc, at, ref, stack)
            if fragment is None:
                continue
            if fragment.data.get("steps") is not None:
                self._problem(fragment, ("steps",), "a top-level include brings only defaults; include steps from within "
                                                    "'steps' (`- include: FILE`)")  # fmt: skip
            sub, sub_links = self._defaults_of(fragment, inner)
            merged = self._overlay(merged, links, sub, sub_links)
        if own:
            own_links: dict[Path_, tuple[Located, Path_]] = {("defaults", k): (doc, ("defaults", k)) for k in own}
            merged = self._overlay(merged, links, own, own_links)
        return merged, links

    @staticmethod
    def _overlay(base: dict[str, Any], links: dict[Path_, tuple[Located, Path_]], top: dict[str, Any],
                 top_links: dict[Path_, tuple[Located, Path_]]) -> dict[str, Any]:  # fmt: skip
        """``top`` (defaults per type) merged over ``base``, recording where each value of ``top`` was written."""

        def from_top(p: Path_) -> None:
            key = ("defaults", *p)
            for n in range(len(key), 1, -1):
                found = top_links.get(key[:n])
                if found is not None:
                    links[key] = (found[0], (*found[1], *key[n:]))
                    return

        merged: dict[str, Any] = merge_tracked(base, top, on_default=lambda _: None, on_value=from_top)
        return merged

    # ------------------------------------------------------------------ steps

    def _steps_of(self, doc: Located, path: Path_, stack: list[Path]) -> list[tuple[Any, Located, Path_]]:
        """(step, where written, path there) for each step of ``doc``'s list at ``path``, includes spliced in."""
        out: list[tuple[Any, Located, Path_]] = []
        items = doc.data.get("steps") if isinstance(doc.data, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not (isinstance(item, dict) and "include" in item):
                out.append((item, doc, (*path, i)))
                continue
            extra = [k for k in item if k != "include"]
            if extra:
                self._problem(doc, (*path, i, extra[0]), f"an include item in 'steps' has only 'include'; got {', '.join(map(str, extra))}")
            fragment, inner = self._load(doc, (*path, i, "include"), item["include"], stack)
            if fragment is None:
                continue
            if fragment.data.get("defaults") is not None or fragment.data.get("include") is not None:
                key = "defaults" if fragment.data.get("defaults") is not None else "include"
                self._problem(fragment, (key,), f"a file included in 'steps' brings only steps; include its {key} at the "
                                                "top level of the runbook (`include: [FILE]`)")  # fmt: skip
            if not isinstance(fragment.data.get("steps"), list):
                self._problem(fragment, (), "expected 'steps': a list of steps to include")
                continue
            out += self._steps_of(fragment, ("steps",), inner)
            if len(out) > MAX_STEPS:
                self._problem(doc, (*path, i, "include"), f"includes expand to more than {MAX_STEPS} steps")
                return out[:MAX_STEPS]
        return out

    # ------------------------------------------------------------------ files

    def _refs(self, doc: Located, path: Path_) -> list[tuple[Path_, Any]]:
        raw = doc.data.get("include") if isinstance(doc.data, dict) else None
        if raw is None:
            return []
        if isinstance(raw, list):
            return [((*path, i), ref) for i, ref in enumerate(raw)]
        return [(path, raw)]

    def _load(self, doc: Located, at: Path_, ref: Any, stack: list[Path]) -> tuple[Located | None, list[Path]]:
        """The fragment ``ref`` (written in ``doc`` at ``at``) names, parsed once, and the include chain below it."""
        self.count += 1
        if self.count > MAX_INCLUDES:
            if self.count == MAX_INCLUDES + 1:
                self._problem(doc, at, f"more than {MAX_INCLUDES} includes in one runbook")
            return None, stack
        if len(stack) > MAX_DEPTH:
            self._problem(doc, at, f"includes nested more than {MAX_DEPTH} deep")
            return None, stack
        real = self._resolve(doc, at, ref)
        if real is None:
            return None, stack
        if real in stack:
            chain = " → ".join(_display(p) for p in [*stack[stack.index(real) :], real])
            self._problem(doc, at, f"include cycle: {chain}")
            return None, stack
        first = real not in self.parsed
        if first:
            self.parsed[real] = self._parse(doc, at, real)
        parsed = self.parsed[real]
        if parsed is None:
            return None, stack
        fragment = replace(parsed, included_from=self._site(doc, at), links={})
        if first and not self._fragment_ok(fragment):
            self.parsed[real] = None
            return None, stack
        return fragment, [*stack, real]

    @staticmethod
    def _site(doc: Located, at: Path_) -> str:
        """``file:line:column`` of an include, and of the includes above it (for messages about what it brought in)."""
        line, col = doc.position(at, value=True)
        there = doc.resolve(at)[0]
        site = f"{there.file}:{line}:{col}" if line else there.file
        return f"{site}, included from {there.included_from}" if there.included_from else site

    def _fragment_ok(self, fragment: Located) -> bool:
        if not isinstance(fragment.data, dict):
            self._problem(fragment, (), "an included file is a mapping with 'defaults' and/or 'steps'")
            return False
        for key in fragment.data:
            if key == "name":
                self._problem(fragment, (key,), "this file is a runbook (it has a name); only files without a name can be "
                                                "included (put shared parts in a file such as _shared/x.yaml)")  # fmt: skip
            elif key not in FRAGMENT_KEYS:
                self._problem(fragment, (key,), f"unknown key '{key}' in an included file; expected {', '.join(FRAGMENT_KEYS)}")
        return True

    def _resolve(self, doc: Located, at: Path_, ref: Any) -> Path | None:
        if not isinstance(ref, str) or not ref.strip():
            self._problem(doc, at, "expected the path of a YAML file to include (relative, e.g. _shared/lb.yaml)")
            return None
        pure = PurePosixPath(ref)
        if pure.is_absolute() or "\\" in ref or ".." in pure.parts:
            self._problem(doc, at, f"include '{ref}': paths are relative to the runbook's directory or the search path, "
                                   "without '..' or a leading '/'")  # fmt: skip
            return None
        if pure.suffix not in (".yaml", ".yml"):
            self._problem(doc, at, f"include '{ref}': only YAML files (.yaml, .yml) can be included")
            return None
        here = Path(doc.file).parent
        for candidate in [here / pure, *(root / pure for root in self.roots)]:
            if not candidate.exists():
                continue
            real = candidate.resolve()
            if not any(real.is_relative_to(root) for root in self.roots):
                self._problem(doc, at, f"include '{ref}' resolves to {real}, outside the runbook search path")
                return None
            return real
        looked = ", ".join(str(p) for p in dict.fromkeys([here.resolve(), *self.roots]))
        self._problem(doc, at, f"include '{ref}': no such file (looked in {looked})")
        return None

    def _parse(self, doc: Located, at: Path_, real: Path) -> Located | None:
        from runner.yamlsafe import DEFAULT_MAX_BYTES, load_yaml

        limit = int(os.environ.get("RUNBOOK_MAX_FILE_BYTES", DEFAULT_MAX_BYTES))
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    self._problem(doc, at, f"include {real}: not a regular file")
                    return None
                with os.fdopen(fd, "rb", closefd=False) as f:
                    raw = f.read(limit + 1)
            finally:
                os.close(fd)
        except OSError as exc:
            self._problem(doc, at, f"include {real}: cannot read it: {exc.strerror}")
            return None
        try:
            return load_yaml(raw, _display(real))
        except ValidationError as exc:
            self.problems += [replace(p, included_from=self._site(doc, at)) for p in exc.problems]
            return None

    def _problem(self, doc: Located, path: Path_, message: str) -> None:
        self.problems.append(doc.problem(path, message))


def _display(real: Path) -> str:
    """How messages name an included file: relative to the current directory when it is below it."""
    try:
        return str(real.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(real)
