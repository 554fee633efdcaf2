"""Finding and loading runbooks.

Search path: the ``--path`` entries if given, else ``RUNBOOK_PATH`` (``os.pathsep``
separated) if set, else ``./runbooks``; then directories shipped by plugins.
Each entry is a directory (searched recursively for ``*.yaml``, ``*.yml`` and
``*.py``; names starting with ``.`` or ``_`` are skipped) or a single file.

Runbooks are looked up by name in the catalog, never by joining a name into a
path. Two runbooks with one name is an error naming both files.

Loading the catalog finds every runbook's *name* but compiles or decodes only what it must: a YAML file
whose compiled form is in the compile cache is known by the summary in that entry's header (name,
description, params ...), and is decoded when a command asks for it by name (:meth:`Catalog.get`, which a
sub-runbook step calls for its child too). Listing reads the summaries (:meth:`Catalog.summaries`). A file
that is not in the cache is compiled at once (and stored), so its problems are reported as before; a
Python runbook is imported at once. A runbook with includes depends on other files and is never cached, so it is
compiled at once too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner._cache_index import FolderIndexes
from runner._entries import Entry, RunbookMap, RunbookSummary, lazy_entry, summary_of
from runner.errors import Problem, RunbookNotFound, ValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runner._cache_index import FolderIndex
    from runner.compile_cache import CompileCache
    from runner.model import RunbookSpec
    from runner.registry import StepTypeRegistry
    from runner.store.records import JSONText
    from runner.yamlsafe import Located

__all__ = ["Catalog", "LoadedRunbook", "RunbookSummary", "search_path", "summary_of"]

PY_MODULE_PREFIX = "runbook_catalog"
_SUFFIXES = (".yaml", ".yml", ".py")


def search_path(paths: Sequence[str | Path] = (), plugin_dirs: Iterable[Path] = ()) -> list[Path]:
    """The directories and files searched for runbooks, in order."""
    if paths:
        chosen = [Path(p) for p in paths]
    elif os.environ.get("RUNBOOK_PATH"):
        chosen = [Path(p) for p in os.environ["RUNBOOK_PATH"].split(os.pathsep) if p]
    else:
        chosen = [Path("runbooks")]
    return [*chosen, *plugin_dirs]


@dataclass
class LoadedRunbook:
    """A compiled runbook and where it came from."""

    spec: RunbookSpec
    file: str
    params_model: type[BaseModel]
    registry: StepTypeRegistry = field(repr=False)
    located: Located | None = field(default=None, repr=False)
    source: bytes | None = field(default=None, repr=False)
    """The YAML it was compiled from, when positions are to be found on demand (a compile cache hit)."""
    spec_head: bytes | None = field(default=None, repr=False)
    """The compiled runbook without its steps, as JSON text ending in ``"steps":[]}`` (a compile cache hit's line;
    made on first use otherwise). A compiled runbook's steps are held as their texts
    (:attr:`runner.model.Steps.texts`): :attr:`spec_json` is decoded from both on first use only, and a new run
    stores them joined as they are (see :meth:`snapshot`)."""

    @classmethod
    def of(cls, spec: RunbookSpec, file: str, registry: StepTypeRegistry, *, located: Located | None = None,
           source: bytes | None = None) -> LoadedRunbook:  # fmt: skip
        """A compiled YAML (or stored) runbook, with the params model its declared params give."""
        from runner.params import build_params_model

        return cls(spec, file, build_params_model(spec.name, spec.params), registry, located, source)

    @property
    def name(self) -> str:
        """The runbook's name."""
        return self.spec.name

    @cached_property
    def spec_json(self) -> dict[str, Any]:
        """The compiled runbook as JSON (the snapshot stored with each run, and what the hashes are taken of).

        Callers must not change it: it is computed once per loaded runbook. A runbook read from the compile cache
        decodes it from its texts (only edits and analysis need it; a run stores :meth:`snapshot`).
        """
        texts = self.spec.steps.texts
        if texts is not None:
            data: dict[str, Any] = json.loads(self.head_text)
            data["steps"] = [json.loads(text) for text in texts]
            return data
        return self.spec.model_dump(mode="json", by_alias=True)

    @property
    def head_text(self) -> bytes:
        """The compiled runbook without its steps as compact JSON ending in ``"steps":[]}`` (see :attr:`spec_head`)."""
        if self.spec_head is None:
            head = self.spec.model_dump(mode="json", by_alias=True, exclude={"steps"})
            self.spec_head = json.dumps({**head, "steps": []}, separators=(",", ":")).encode("utf-8")
        return self.spec_head

    def snapshot_lines(self) -> tuple[bytes, list[bytes]]:
        """The snapshot as compact JSON: the runbook with ``"steps":[]`` and each step's text (the compile cache's lines)."""
        texts = self.spec.steps.texts
        return self.head_text, list(texts) if texts is not None else [step.json_text() for step in self.spec.steps]

    def snapshot(self) -> dict[str, Any] | JSONText:
        """What a new run stores as its runbook snapshot: for a compile cache hit, its texts joined (not decoded),
        else :attr:`spec_json`."""
        texts = self.spec.steps.texts
        if texts is not None and "spec_json" not in self.__dict__:
            from runner.store.records import JSONText

            return JSONText(_joined(self.head_text, texts))
        return self.spec_json

    @cached_property
    def step_hashes(self) -> dict[str, str]:
        """Per-step content hash (config, probes, and step-type fingerprints such as function source)."""
        out = {}
        texts = self.spec.steps.texts
        for i, step in enumerate(self.spec.steps):  # a step at a time: no decoded copy of the whole runbook
            dumped = json.loads(texts[i]) if texts is not None else step.model_dump(mode="json", by_alias=True)
            data = {**dumped, "_fingerprints": [self._fingerprint(a.type, a.config) for a in actions_of(step)]}
            out[step.id] = _digest(data)
        return out

    def positions(self) -> Located | None:
        """Line and column of every key of the YAML source (parsed again on first use after a cache hit)."""
        if self.located is None and self.source is not None:
            from runner.yamlsafe import load_yaml

            self.located = load_yaml(self.source, self.file)
        return self.located

    @cached_property
    def content_hash(self) -> str:
        """Hash of the whole compiled runbook."""
        head = self.spec_json if "spec_json" in self.__dict__ else json.loads(self.head_text)
        data = {key: value for key, value in head.items() if key != "steps"}
        return _digest({"runbook": data, "steps": self.step_hashes})

    def _fingerprint(self, type_name: str, config: Any) -> str | None:
        if type_name not in self.registry:
            return None
        return self.registry.get(type_name).fingerprint(config)

    def location(self, step_id: str, key: str | None = None) -> str:
        """``file:line`` of a step (for messages)."""
        located = self.positions()
        if located is None:
            return self.file
        idx = self.spec.index(step_id)
        there, path = located.resolve(("steps", idx, key) if key else ("steps", idx))  # an included step: its own file
        line, _ = there.position(path)
        return f"{there.file}:{line}" if line else there.file


def _joined(head: bytes, steps: Sequence[bytes]) -> Iterator[bytes]:
    """The runbook's JSON text in chunks: ``head`` (ending in ``"steps":[]}``) with ``steps`` put in its list."""
    yield head[:-2]
    for i, step in enumerate(steps):
        if i:
            yield b","
        yield step
    yield b"]}"


def actions_of(step: Any) -> list[Any]:
    """A step's action, the probes of its checks (precondition, check, verify) and its rollback action."""
    out = [step.action]
    out += [c for c in (*step.precondition, *step.check, *(step.verify.checks if step.verify else ())) if c.type]
    if step.rollback is not None:
        out.append(step.rollback)
    return out


def _digest(data: Any) -> str:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class Catalog:
    """Runbooks by name, plus every problem found while loading them."""

    def __init__(self, entries: dict[str, Entry], problems: list[Problem], files: list[Path]) -> None:
        self._entries, self.problems, self.files = entries, problems, files
        self.runbooks: Mapping[str, LoadedRunbook] = RunbookMap(self)
        """Runbooks by name (a runbook is decoded when read)."""
        self.invalid: dict[str, list[Problem]] = {}
        """Problems of each file that failed to load, by the runbook name(s) it declares (see :meth:`get`)."""
        self.partial: list[LoadedRunbook] = []
        """What compiled of runbooks that have problems (never run; ``validate`` checks their templates too)."""

    @classmethod
    def load(cls, registry: StepTypeRegistry, paths: Sequence[Path], *, cache: bool = True) -> Catalog:
        """Find every runbook under ``paths``; problems are collected, not raised. Cached runbooks are decoded on use.

        ``cache=False`` compiles every YAML file afresh (``validate``: positions of everything, defaults included).
        """
        from runner.compile_cache import default_cache

        entries: dict[str, Entry] = {}
        problems: list[Problem] = []
        stats: dict[Path, os.stat_result] = {}
        files = _files(paths, problems, stats)
        clashes: set[str] = set()
        invalid: dict[str, list[Problem]] = {}
        partial: list[LoadedRunbook] = []
        store = default_cache() if cache else None
        indexes = FolderIndexes(store)
        for file in files:
            try:
                found = _scan_file(file, registry, paths, store, indexes.of(file), stats.get(file))
            except ValidationError as exc:
                problems.extend(exc.problems)
                for name in names_of_broken(file):
                    invalid.setdefault(name, []).extend(exc.problems)
                partial += [LoadedRunbook.of(spec, str(file), registry, located=where) for spec, where in getattr(exc, "partials", [])]
                found = [(rb.name, Entry(rb.file, rb=rb)) for rb in getattr(exc, "loaded", [])]  # a Python file's good ones
            for name, entry in found:
                other = entries.get(name)
                if other is not None:
                    problems.append(Problem(f"runbook name '{name}' is also defined in {other.file}", file=entry.file))
                    clashes.add(name)
                    continue
                entries[name] = entry
        for name in clashes:
            entries.pop(name, None)
        indexes.save()
        catalog = cls(entries, problems, files)
        catalog.invalid, catalog.partial = invalid, partial
        return catalog

    def get(self, name: str) -> LoadedRunbook:
        """The runbook called ``name``; raises if unknown or defined twice, and with the file's own problems
        when the file that declares ``name`` does not load."""
        entry = self._entries.get(name)
        if entry is None:
            clash = [p for p in self.problems if f"runbook name '{name}' is also defined" in p.message]
            if clash:
                raise ValidationError(clash)
            if name in self.invalid:
                raise ValidationError(self.invalid[name])
            raise RunbookNotFound(name, [*self.names(), *self.invalid])
        try:
            return entry.load()
        except ValidationError as exc:  # a cached runbook that no longer compiles (a step type changed meanwhile)
            self._entries.pop(name, None)
            self.invalid[name] = list(exc.problems)
            self.problems.extend(exc.problems)
            raise

    def names(self) -> list[str]:
        """Every runbook's name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def summaries(self) -> list[RunbookSummary]:
        """Every runbook's summary, sorted by name, without decoding the ones the compile cache describes."""
        return [self._entries[name].summary() for name in self.names()]

    def load_all(self) -> list[LoadedRunbook]:
        """Every runbook, decoded (sorted by name); one that no longer loads is left out and its problems recorded."""
        out = []
        for name in self.names():
            try:
                out.append(self.get(name))
            except ValidationError:
                continue
        return out

    def __iter__(self) -> Iterator[LoadedRunbook]:
        return iter(self.load_all())


def _files(paths: Sequence[Path], problems: list[Problem], stats: dict[Path, os.stat_result] | None = None) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(_walk(path))
        elif path.exists():  # a file, or a FIFO or device that loading refuses by name
            out.append(path)
        elif path != Path("runbooks"):  # the default directory may simply not exist yet
            problems.append(Problem("runbook path does not exist", file=str(path)))
    seen: set[tuple[int, int] | Path] = set()
    unique = []
    for f in out:
        try:
            st = os.stat(f)
            key: tuple[int, int] | Path = (st.st_dev, st.st_ino)  # one stat, not a path resolution per file
            if stats is not None:
                stats[f] = st
        except OSError:
            key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _walk(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")) and d != "tests")
        folder = Path(dirpath)  # once per folder: a child path is cheaper than a path parsed whole
        for name in sorted(filenames):
            if name.endswith(_SUFFIXES) and not name.startswith((".", "_")) and not _is_test_file(name):
                found.append(folder / name)
    return found


def _is_test_file(name: str) -> bool:
    """Tests of runbooks live beside them (``test_*.py``, ``conftest.py``, ``tests/``); they are not runbooks."""
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py")


_NAME_LINE = re.compile(rb"""^name:[ \t]*["']?([a-z0-9][a-z0-9._-]{0,127})["']?[ \t]*(?:#.*)?$""", re.M)
_NAME_CALL = re.compile(rb"""\bRunbook\(\s*(?:name\s*=\s*)?["']([a-z0-9][a-z0-9._-]{0,127})["']""")


def declared_names(path: Path) -> list[str]:
    """The runbook name(s) a file declares, read from its text (for a file that does not load)."""
    from runner.safeio import read_head

    head = read_head(path, 256 * 1024)  # never blocks on a FIFO, never reads a device
    pattern = _NAME_CALL if path.suffix == ".py" else _NAME_LINE
    return list(dict.fromkeys(m.decode() for m in pattern.findall(head)))


def names_of_broken(path: Path) -> list[str]:
    """The names a file that does not load answers to: those it declares, and a YAML file's own name (``NAME.yaml``),
    so that ``runbook run NAME`` shows the file's problems even when its ``name:`` differs or cannot be read."""
    names = declared_names(path)
    if path.suffix in (".yaml", ".yml") and path.stem not in names:
        names.append(path.stem)
    return names


def declared_runbooks(paths: Sequence[Path]) -> dict[str, str]:
    """Name → file of every runbook the files under ``paths`` declare, read from their text without compiling them
    (shell completion: fast, and it offers a runbook whose file has a problem too)."""
    found: dict[str, str] = {}
    for file in _files(paths, []):
        for name in declared_names(file):
            found.setdefault(name, str(file))
    return found


def load_file(path: Path, registry: StepTypeRegistry, *, search: Sequence[str | os.PathLike[str]] = (),
              cache: bool = True) -> list[LoadedRunbook]:  # fmt: skip
    """Load the runbook(s) defined in one YAML or Python file (``search``: where includes are looked up)."""
    if path.suffix == ".py":
        return _load_python(path, registry, search)
    return [_load_yaml(path, registry, search, cache)]


def _scan_file(path: Path, registry: StepTypeRegistry, search: Sequence[str | os.PathLike[str]], cache: CompileCache | None,
               index: FolderIndex | None, st: os.stat_result | None) -> list[tuple[str, Entry]]:  # fmt: skip
    """The runbooks one file defines, by name: from the folder index (an unchanged file is not even read) or the
    compile cache's summary when either knows it, else loaded now."""
    if path.suffix == ".py":
        return [(rb.name, Entry(rb.file, rb=rb)) for rb in _load_python(path, registry, search)]
    file = str(path)
    known = index.get(path.name, st) if index is not None and st is not None else None
    if known is not None and all(t in registry for t in known.types):
        return [lazy_entry(file, known.summary, lambda: _compile_yaml(_read_source(file), file, registry, search, _cache()))]
    source = _read_source(file)
    known = cache.peek(source, file, registry) if cache is not None else None
    if known is None:
        rb = _compile_yaml(source, file, registry, search, cache)
        known = cache.peek(source, file, registry) if cache is not None and index is not None else None  # stored?
        if known is not None and index is not None and st is not None:
            index.put(path.name, st, known)
        return [(rb.name, Entry(rb.file, rb=rb))]
    if index is not None and st is not None:
        index.put(path.name, st, known)
    return [lazy_entry(file, known.summary, lambda: _compile_yaml(source, file, registry, search, _cache()))]


def _cache() -> CompileCache | None:
    from runner.compile_cache import default_cache

    return default_cache()


def _read_source(file: str) -> bytes:
    """A YAML runbook file's bytes, within the size limit (a problem naming the file otherwise)."""
    from runner.safeio import decode_input, read_input
    from runner.yamlsafe import check_size

    raw = read_input(file, what="runbook file")  # a regular file, read up to the cap (a symlink to /dev/zero is refused)
    check_size(raw, file)
    decode_input(raw, file, what="runbook file")  # a binary or foreign file is named, never quoted
    return raw


def _load_yaml(path: Path, registry: StepTypeRegistry, search: Sequence[str | os.PathLike[str]] = (),
               use_cache: bool = True) -> LoadedRunbook:  # fmt: skip
    from runner.compile_cache import default_cache

    return _compile_yaml(_read_source(str(path)), str(path), registry, search, default_cache() if use_cache else None)


def _compile_yaml(raw: bytes, file: str, registry: StepTypeRegistry, search: Sequence[str | os.PathLike[str]],
                  cache: CompileCache | None) -> LoadedRunbook:  # fmt: skip
    """The runbook ``raw`` (read from ``file``) compiles to: from ``cache``, else compiled (and stored there)."""
    cached = cache.load(raw, file, registry) if cache is not None else None
    if cached is not None:
        return cached
    from runner.compiler import compile_document
    from runner.yamlsafe import load_yaml

    located = load_yaml(raw, file)
    try:
        spec, compiled = compile_document(located, registry, search=search or None)
    except ValidationError as exc:
        partial = getattr(exc, "partial", None)
        exc.partials = [partial] if partial is not None else []  # type: ignore[attr-defined]
        raise
    if compiled is located and len(spec.steps) > spec.steps.MODELS_KEPT:
        # A long runbook does not keep the position of every key (about 2 KiB a step) for the messages that may need
        # one: they are found by parsing its source again, as for a compile cache hit (issue 19).
        rb = LoadedRunbook.of(spec, file, registry, source=raw)
    else:
        rb = LoadedRunbook.of(spec, file, registry, located=compiled)
    if cache is not None and compiled is located:  # a runbook with includes depends on other files: not cached
        cache.store(raw, rb)
    return rb


def _load_python(path: Path, registry: StepTypeRegistry, search: Sequence[str | os.PathLike[str]] = ()) -> list[LoadedRunbook]:
    from runner.compiler import compile_document
    from runner.params import build_params_model
    from runner.pyform import Runbook

    module = import_runbook_module(path)
    out = []
    problems: list[Problem] = []
    partials: list[Any] = []
    for value in vars(module).values():
        if isinstance(value, Runbook):
            try:
                spec, located = compile_document(value.located(str(path)), registry, search=search or None)
            except ValidationError as exc:  # every runbook of the file is checked, not only the first
                problems += exc.problems
                if getattr(exc, "partial", None) is not None:
                    partials.append(exc.partial)  # type: ignore[attr-defined]
                continue
            model = value.params_model or build_params_model(spec.name, spec.params)
            out.append(LoadedRunbook(spec, str(path), model, registry, located))
    if problems:
        error = ValidationError(problems)
        error.loaded = out  # type: ignore[attr-defined]  # Catalog.load keeps them: their own problems get reported too
        error.partials = partials  # type: ignore[attr-defined]
        raise error
    return out


def import_runbook_module(path: Path) -> types.ModuleType:
    """Import a Python runbook file as ``runbook_catalog.<stem>`` (once per process)."""
    name = f"{PY_MODULE_PREFIX}.{path.stem}"
    existing = sys.modules.get(name)
    if existing is not None:
        if Path(existing.__file__ or "").resolve() == path.resolve():
            return existing
        raise ValidationError(
            [Problem(f"another Python runbook file is named {path.name} ({existing.__file__}); rename one", file=str(path))]
        )
    from runner.safeio import read_input

    read_input(path, what="Python runbook file")  # a regular file within the cap, before the importer reads it
    if PY_MODULE_PREFIX not in sys.modules:
        parent = types.ModuleType(PY_MODULE_PREFIX)
        parent.__path__ = []
        sys.modules[PY_MODULE_PREFIX] = parent
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValidationError([Problem("cannot import this file as Python", file=str(path))])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.append(folder)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ValidationError([Problem(f"Python syntax error: {exc.msg}", file=str(path), line=exc.lineno, column=exc.offset)]) from None
    except ValidationError:
        del sys.modules[name]
        raise
    except Exception as exc:
        del sys.modules[name]
        line, col = _traceback_position(exc, path)
        raise ValidationError([Problem(f"importing the runbook failed: {type(exc).__name__}: {exc}", file=str(path), line=line,
                                       column=col)]) from None  # fmt: skip
    return module


def _traceback_position(exc: BaseException, path: Path) -> tuple[int | None, int | None]:
    """(line, column) of the last frame of ``exc``'s traceback in ``path``."""
    import traceback

    found: tuple[int | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            col = getattr(frame, "colno", None)
            found = (frame.lineno, col + 1 if col is not None else None)
    return found
