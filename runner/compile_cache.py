"""Compiled YAML runbooks, cached by content (as Python caches bytecode in ``.pyc`` files).

Loading a YAML runbook parses it, validates every step against its step type and compiles it, on every
command: for a catalog of many runbooks, most of a command's start. An entry keeps the compiled runbook
(the JSON form stored with each run, which the compiler returns by construction) and its content hashes,
under a key made of:

- the file's bytes (its path is not part of it: the same runbook in two checkouts is one entry);
- this runbook version, the Python and pydantic versions, and the path, size and modification time of every
  module of the ``runner`` package's top level (where the compiler and the runbook model live) and of PyYAML;
- in the entry, the same stamp of every module of each package that provides a step type the runbook uses
  (the class and its ``Config``), checked when the entry is read.

As for ``.pyc`` files, a module's stamp is the one this process first saw: a long-running process whose
plugin is upgraded under it keeps reading entries for the code it runs, and writes none once a stamp on disk
no longer matches. No entry is written while any stamp is unknown (a module without its source file).

An entry is lines of JSON: a header (format, key, the step types' stamps and the runbook's summary: name,
description, version, tags, step count, params and their JSON Schema), the content hashes and step ids, the
compiled runbook without its steps, then one line per compiled step. A step is held as its line and becomes a
model only when used (:class:`runner.model.Steps`), and the snapshot a new run stores is joined from these same
lines (:meth:`~runner.catalog.LoadedRunbook.snapshot`), never decoded: a large runbook costs about its text
(issue 19: bounded memory per run). The catalog
reads only headers to learn which runbooks exist (:meth:`CompileCache.peek`: a listing, duplicate names) and
decodes the one runbook a command needs (:meth:`CompileCache.load`), so a large runbook elsewhere in the project
costs a command that does not use it only the reading and hashing of its file.

Reading an entry validates it again (pydantic, as a stored snapshot is read); an entry that does not
validate, was cut short or belongs to another key is a miss, never a different runbook. Only runbooks that
compiled without a problem are stored. A runbook with a step type that fingerprints its actions (a Python
step hashes its function's source) is hashed again on every load, so an edited function still shows as an
edited step.

Entries live in ``RUNBOOK_CACHE_DIR``, else ``$XDG_CACHE_HOME/runbook/compiled``, else
``~/.cache/runbook/compiled``: a directory of mode 0700 owned by the user, files 0600. A directory that
others can write (or that someone else owns) is not used. ``RUNBOOK_CACHE_DIR=off`` turns the cache off. A
directory that cannot be written costs only speed; nothing in here ever fails a command.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner._cache_index import FolderIndex, Known

if TYPE_CHECKING:
    from runner.catalog import LoadedRunbook
    from runner.model import RunbookSpec
    from runner.registry import StepTypeRegistry
    from runner.steptypes import StepType

__all__ = ["CompileCache", "default_cache"]

FORMAT = 5  # 5: header with the summary; content hashes and step ids; the runbook without steps; a line per step
MAX_ENTRIES = 2000  # a write that finds more removes the least recently used
STALE_TMP = 3600.0  # seconds after which a temporary file is a crashed writer's, removed by the next trim
_OFF = frozenset({"", "0", "off", "false", "no", "none"})

log = logging.getLogger("runbook.cache")


def default_cache() -> CompileCache | None:
    """The cache ``RUNBOOK_CACHE_DIR`` / ``XDG_CACHE_HOME`` / ``HOME`` name, or None when it is turned off."""
    value = os.environ.get("RUNBOOK_CACHE_DIR")
    if value is not None:
        return None if value.strip().lower() in _OFF else CompileCache(Path(value).expanduser())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return CompileCache(Path(base) / "runbook" / "compiled")


class _Unstampable(Exception):
    """A module whose source file cannot be stamped: entries depending on it are neither read nor written."""


_seen: dict[str, str] = {}  # path -> the stamp this process first saw


def _stat_stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def _stamp(path: str) -> str:
    """``path=size:mtime_ns`` of a source file, as first seen by this process."""
    stamp = _seen.get(path)
    if stamp is None:
        try:
            stamp = _seen.setdefault(path, _stat_stamp(path))
        except OSError:
            raise _Unstampable(path) from None
    return f"{path}={stamp}"


def _tree(directory: str) -> list[str]:
    """Every ``.py`` file under ``directory`` (``__pycache__`` left out), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        found += [os.path.join(dirpath, n) for n in sorted(filenames) if n.endswith(".py")]
    return found


@functools.cache
def _package_files(top: str) -> tuple[str, ...]:
    """The source files of top-level module or package ``top`` (imported already: it provides a step type)."""
    module = sys.modules.get(top)
    paths = list(getattr(module, "__path__", None) or [])
    if paths:
        files = tuple(f for p in paths for f in _tree(p))
        if not files:  # installed without sources: nothing to tell one version from another
            raise _Unstampable(top)
        return files
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py"):
        raise _Unstampable(top)
    return (file,)


@functools.cache
def _code_files() -> tuple[str, ...]:
    """runner's top-level modules (the compiler, the runbook model ...) and PyYAML's, found without importing it."""
    import importlib.util

    root = os.path.dirname(os.path.abspath(__file__))
    yaml_spec = importlib.util.find_spec("yaml")
    dirs = [root, *((yaml_spec.submodule_search_locations or []) if yaml_spec else [])]
    found = []
    for directory in dirs:
        with os.scandir(directory) as it:
            found += sorted(e.path for e in it if e.name.endswith((".py", ".so")))
    return tuple(found)


@functools.cache
def _code_stamp() -> str:
    """Versions, and the stamps of :func:`_code_files` (as first seen by this process)."""
    import pydantic

    from runner._version import __version__

    parts = [f"runbook {__version__}", f"python {sys.version}", f"pydantic {pydantic.VERSION}"]
    return "\n".join([*parts, *(_stamp(f) for f in _code_files())])


@functools.cache
def _key_prefix() -> hashlib._Hash:
    """The hash of what every key starts with (the format and :func:`_code_stamp`), copied for each file."""
    return hashlib.sha256(f"runbook-compiled-{FORMAT}\n{_code_stamp()}\n".encode())


def _type_files(step_type: StepType) -> list[str]:
    """The source files of the packages that the step type's class and its ``Config`` come from."""
    tops = sorted({c.__module__.split(".")[0] for c in (type(step_type), step_type.Config)})
    return [f for top in tops for f in _package_files(top)]


def _type_stamp(step_type: StepType) -> str:
    """Which classes implement a step type, and the stamps of :func:`_type_files`."""
    cls, config = type(step_type), step_type.Config
    return "\n".join([f"{cls.__module__}.{cls.__qualname__}", f"{config.__module__}.{config.__qualname__}",
                      *(_stamp(f) for f in _type_files(step_type))])  # fmt: skip


def _types_used(spec: RunbookSpec, registry: StepTypeRegistry) -> set[str]:
    """Every step type a compiled runbook uses: actions, rollbacks, checks, and checks nested in configs."""
    from runner.catalog import actions_of

    found: set[str] = set()

    def add(kind: str, config: Any) -> None:
        found.add(kind)
        for field in registry.get(kind).check_fields if kind in registry else ():
            for check in (config or {}).get(field) or []:
                if isinstance(check, dict) and isinstance(check.get("type"), str):
                    add(check["type"], check.get("config"))

    for step in spec.steps:
        for action in actions_of(step):
            add(action.type, action.config)
    return found


def _fingerprints(step_type: StepType) -> bool:
    """True if the step type adds a fingerprint to its actions' hashes (it overrides ``StepType.fingerprint``)."""
    from runner.steptypes import StepType

    return type(step_type).fingerprint is not StepType.fingerprint


class CompileCache:
    """A directory of compiled runbooks, one JSON file per key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def key(self, source: bytes) -> str:
        """The entry name for a runbook file's bytes (with this process's code stamp)."""
        digest = _key_prefix().copy()
        digest.update(source)
        return digest.hexdigest()

    def _usable(self, *, create: bool) -> bool:
        """The directory exists (or was created), is owned by this user and no one else can write it."""
        if create:
            with contextlib.suppress(OSError):
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            st = os.stat(self.directory)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            log.debug("compile cache %s not used: not a directory of this user's that only it can write", self.directory)
            return False
        return True

    def peek(self, source: bytes, file: str, registry: StepTypeRegistry) -> Known | None:
        """The key, step types and summary of the runbook compiled from ``source`` (the entry's header only), or None.

        The step types the entry used must all still be registered (checked without importing them); whether
        their code changed since is checked by :meth:`load`, which a command that runs or shows the runbook calls.
        """
        try:
            if not self._usable(create=False):
                return None
            key = self.key(source)
            with open(os.path.join(self.directory, key + ".json"), "rb") as f:
                header = json.loads(f.readline())
            if header.get("key") != key or header.get("format") != FORMAT or not all(t in registry for t in header["types"]):
                return None
            summary = header["summary"]
            if not isinstance(summary, dict) or not isinstance(summary.get("name"), str):
                return None
            return Known(key, list(header["types"]), summary)
        except FileNotFoundError:
            return None
        except Exception as exc:  # damaged or foreign: a miss
            log.debug("compile cache: no summary used for %s: %s", file, exc)
            return None

    def index(self, folder: str) -> FolderIndex | None:
        """The index of the runbooks of ``folder`` (see :mod:`runner._cache_index`), or None if the cache is not usable."""
        try:
            return FolderIndex(self, folder, _key_prefix().hexdigest()) if self._usable(create=False) else None
        except _Unstampable:
            return None

    def load(self, source: bytes, file: str, registry: StepTypeRegistry) -> LoadedRunbook | None:
        """The runbook compiled from ``source`` (read from ``file``), or None if there is no usable entry."""
        try:
            path = self.directory / f"{self.key(source)}.json"
            if not self._usable(create=False):
                return None
            with open(path, "rb") as f:
                data = f.read()
            rb = self._decode(data, path.stem, source, file, registry)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a damaged or foreign entry, an unstampable module: a miss, compiled afresh
            log.debug("compile cache: no entry used for %s: %s", file, exc)
            return None
        if rb is not None:
            with contextlib.suppress(OSError):
                os.utime(path)  # least recently used entries are the ones a full cache removes
        return rb

    @staticmethod
    def _decode(data: bytes, key: str, source: bytes, file: str, registry: StepTypeRegistry) -> LoadedRunbook | None:
        from runner.catalog import LoadedRunbook
        from runner.model import RunbookSpec, Steps
        from runner.steptypes import remember_reusable_configs

        lines = data.split(b"\n")
        header = json.loads(lines[0])
        if header.get("key") != key or header.get("format") != FORMAT:
            return None
        hashes = json.loads(lines[1])
        for name, stamp in header["types"].items():
            if name not in registry or _type_stamp(registry.get(name)) != stamp:
                return None  # a step type changed, moved or went away: compile again (and report it if gone)
        head, texts = lines[2], lines[3:]
        if not head.endswith(_NO_STEPS):
            return None

        def prepare(step: Any) -> None:
            remember_reusable_configs([a for a in (step.action, step.rollback) if a is not None], registry)

        steps = Steps.lazy(texts, hashes["step_ids"], prepare, check=True)  # a damaged entry is a miss
        spec = RunbookSpec.model_validate_json(head).model_copy(update={"steps": steps})
        rb = LoadedRunbook.of(spec, file, registry, source=source)
        rb.spec_head = head
        if hashes.get("step_hashes") is not None:
            rb.__dict__["step_hashes"] = hashes["step_hashes"]
            rb.__dict__["content_hash"] = hashes["content_hash"]
        return rb

    def store(self, source: bytes, rb: LoadedRunbook) -> None:
        """Keep ``rb``, compiled from ``source``, for the next load (best effort: a failure is only logged)."""
        from runner.catalog import summary_of

        try:
            key = self.key(source)
            used = sorted(_types_used(rb.spec, rb.registry))
            types = {name: _type_stamp(rb.registry.get(name)) for name in used}
            files = [*_code_files(), *(f for name in used for f in _type_files(rb.registry.get(name)))]
            if _changed_since_seen(files):
                return  # code changed on disk since this process loaded it: a new process would compile otherwise
            fingerprinted = any(_fingerprints(rb.registry.get(name)) for name in used)
            header = {"format": FORMAT, "key": key, "types": types, "summary": summary_of(rb).as_dict(with_file=False)}
            hashes = {
                "step_hashes": None if fingerprinted else rb.step_hashes,
                "content_hash": None if fingerprinted else rb.content_hash,
                "step_ids": list(rb.spec.steps.ids),
            }  # fmt: skip
            if self._usable(create=True):
                head, steps = rb.snapshot_lines()
                self._write(key, b"\n".join([_compact(header), _compact(hashes), head, *steps]))
        except Exception as exc:  # never fail a command for the cache's sake
            log.debug("compile cache: %s not stored: %s", rb.file, exc)

    def _write(self, key: str, text: bytes) -> None:
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.directory)  # O_EXCL, mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text)
            os.replace(tmp, self.directory / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._trim()

    def _trim(self) -> None:
        """Remove the least recently used entries beyond :data:`MAX_ENTRIES`, and crashed writers' temporary files."""
        entries: list[tuple[int, str]] = []
        now = time.time()
        with os.scandir(self.directory) as it:
            for e in it:
                with contextlib.suppress(OSError):  # gone meanwhile: another process trimmed it
                    mtime = e.stat().st_mtime_ns
                    if e.name.endswith(".json"):
                        entries.append((mtime, e.path))
                    elif e.name.endswith(".tmp") and now - mtime / 1e9 > STALE_TMP:
                        os.unlink(e.path)
        for _, path in sorted(entries)[: max(0, len(entries) - MAX_ENTRIES)]:
            with contextlib.suppress(OSError):
                os.unlink(path)


_NO_STEPS = b'"steps":[]}'
"""How the line of the runbook without its steps ends (``steps`` is the compiled runbook's last field)."""


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _changed_since_seen(paths: list[str]) -> bool:
    """True if one of ``paths`` no longer has the size and time this process first saw."""
    for path in paths:
        try:
            if _stat_stamp(path) != _seen.get(path):
                return True
        except OSError:
            return True
    return False
