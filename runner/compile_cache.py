"""Compiled YAML runbooks, cached by content (as Python caches bytecode in ``.pyc`` files).

Loading a YAML runbook parses it, validates every step against its step type and compiles it, on every
command: for a catalog of many runbooks, most of a command's start. An entry keeps the compiled runbook
(the snapshot form stored with each run) and its content hashes, under a key made of:

- the file's bytes (its path is not part of it: the same runbook in two checkouts is one entry);
- this runbook version, the Python and pydantic versions, and the size and modification time of each module
  of the ``runner`` package that compiling uses (an edited compiler is a miss, as an edited module's ``.pyc``
  is stale);
- in the entry, the same stamp of each step type's module the runbook uses, checked when the entry is read.

Reading an entry validates it again (pydantic, as a stored snapshot is read); an entry that does not
validate, was cut short or belongs to another key is a miss, never a different runbook. Only runbooks that
compiled without a problem are stored. A step whose type adds a fingerprint (a Python function's source) is
hashed again on every load, so an edited function still shows as an edited step.

Entries live in ``RUNBOOK_CACHE_DIR``, else ``$XDG_CACHE_HOME/runbook/compiled``, else
``~/.cache/runbook/compiled`` (a directory of mode 0700, files 0600); ``RUNBOOK_CACHE_DIR=off`` turns the
cache off. A directory that cannot be written only costs the speed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.catalog import LoadedRunbook
    from runner.registry import StepTypeRegistry
    from runner.steptypes import StepType

__all__ = ["CompileCache", "default_cache"]

FORMAT = 1
MAX_ENTRIES = 2000  # a write that finds more removes the least recently used
_OFF = frozenset({"", "0", "off", "false", "no", "none"})

log = logging.getLogger("runbook.cache")


def default_cache() -> CompileCache | None:
    """The cache ``RUNBOOK_CACHE_DIR`` / ``XDG_CACHE_HOME`` / ``HOME`` name, or None when it is turned off."""
    value = os.environ.get("RUNBOOK_CACHE_DIR")
    if value is not None:
        return None if value.strip().lower() in _OFF else CompileCache(Path(value))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return CompileCache(Path(base) / "runbook" / "compiled")


def _stamp(path: str | None) -> str:
    """``size:mtime_ns`` of a source file (``-`` if it has none, e.g. a class defined in ``__main__``)."""
    if not path:
        return "-"
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}"


# The modules of the runner package whose code decides what a YAML file compiles to: the ones compiling imports.
# tests/test_compile_cache.py checks that this list holds every runner module that importing them loads.
STAMPED_MODULES = (
    "__init__", "_version", "catalog", "compile_cache", "compiler", "durations", "errors", "model", "params",
    "registry", "steptypes", "yamlsafe",
)  # fmt: skip


@functools.cache
def _code_stamp() -> str:
    """Versions, and the stamp of each of :data:`STAMPED_MODULES` (read once per process)."""
    import pydantic

    from runner._version import __version__

    root = os.path.dirname(os.path.abspath(__file__))
    parts = [f"runbook {__version__}", f"python {sys.version_info[:3]}", f"pydantic {pydantic.VERSION}"]
    parts += [f"{name}={_stamp(os.path.join(root, name + '.py'))}" for name in STAMPED_MODULES]
    return "\n".join(parts)


def _type_stamp(step_type: StepType) -> str:
    """Which class implements a step type, and the stamp of the modules of the class and of its ``Config``."""
    cls, config = type(step_type), step_type.Config
    files = {getattr(sys.modules.get(c.__module__), "__file__", None) for c in (cls, config)}
    return f"{cls.__module__}.{cls.__qualname__}/{config.__module__}.{config.__qualname__}:" + ",".join(
        sorted(_stamp(f) for f in files)
    )


def _types_used(spec_json: dict[str, Any]) -> set[str]:
    """Every step type a compiled runbook (snapshot form) names: actions, checks and rollbacks."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            kind = value.get("type")
            if isinstance(kind, str) and "config" in value:
                found.add(kind)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(spec_json.get("steps", []))
    return found


class CompileCache:
    """A directory of compiled runbooks, one JSON file per key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def key(self, source: bytes) -> str:
        """The entry name for a runbook file's bytes (with this process's code stamp)."""
        digest = hashlib.sha256(f"runbook-compiled-{FORMAT}\n{_code_stamp()}\n".encode())
        digest.update(source)
        return digest.hexdigest()

    def load(self, source: bytes, file: str, registry: StepTypeRegistry) -> LoadedRunbook | None:
        """The runbook compiled from ``source`` (read from ``file``), or None if there is no usable entry."""
        key = self.key(source)
        path = self.directory / f"{key}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            return None
        try:
            rb = self._decode(text, key, source, file, registry)
        except Exception as exc:  # a damaged or foreign entry is a miss; the compile that follows replaces it
            log.debug("compile cache entry %s not used: %s", path, exc)
            return None
        if rb is not None:
            with contextlib.suppress(OSError):
                os.utime(path)  # least recently used entries are the ones a full cache removes
        return rb

    @staticmethod
    def _decode(text: str, key: str, source: bytes, file: str, registry: StepTypeRegistry) -> LoadedRunbook | None:
        from runner.catalog import LoadedRunbook
        from runner.model import RunbookSpec
        from runner.params import build_params_model
        from runner.steptypes import reusable_config

        entry = json.loads(text)
        if entry.get("key") != key or entry.get("format") != FORMAT:
            return None
        for name, stamp in entry["types"].items():
            if name not in registry or _type_stamp(registry.get(name)) != stamp:
                return None  # a step type changed, moved or went away: compile again (and report it if gone)
        spec = RunbookSpec.model_validate(entry["spec"])
        for step in spec.steps:
            for action in (step.action, step.rollback):
                if action is not None:
                    reusable = reusable_config(registry.get(action.type), action.config)
                    if reusable is not None:
                        action.with_validated(reusable)
        rb = LoadedRunbook(spec, file, build_params_model(spec.name, spec.params), registry, source=source)
        rb.__dict__["spec_json"] = entry["spec"]  # the cached properties, as computed when the entry was written
        if entry.get("step_hashes") is not None:
            rb.__dict__["step_hashes"] = entry["step_hashes"]
            rb.__dict__["content_hash"] = entry["content_hash"]
        return rb

    def store(self, source: bytes, rb: LoadedRunbook) -> None:
        """Keep ``rb``, compiled from ``source``, for the next load (best effort: errors are only logged)."""
        try:
            types = {name: _type_stamp(rb.registry.get(name)) for name in sorted(_types_used(rb.spec_json))}
            fingerprinted = any(rb.has_fingerprints())
            key = self.key(source)
            entry = {
                "format": FORMAT, "key": key, "types": types, "spec": rb.spec_json,
                "step_hashes": None if fingerprinted else rb.step_hashes,
                "content_hash": None if fingerprinted else rb.content_hash,
            }  # fmt: skip
            self._write(key, json.dumps(entry, separators=(",", ":")))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            log.debug("compile cache: cannot store %s: %s", rb.file, exc)

    def _write(self, key: str, text: str) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.directory / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._trim()

    def _trim(self) -> None:
        """Remove the least recently used entries beyond :data:`MAX_ENTRIES`."""
        with os.scandir(self.directory) as it:
            entries = [e for e in it if e.name.endswith(".json")]
        if len(entries) <= MAX_ENTRIES:
            return
        by_age = sorted(entries, key=lambda e: e.stat().st_mtime_ns)
        for entry in by_age[: len(entries) - MAX_ENTRIES]:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
