"""The compile cache's index of a folder of runbooks: a catalog learns names and summaries from a ``stat`` per file.

For each YAML runbook file of one folder it keeps the file's size, modification and change times (ns) and inode,
the compile cache key of the bytes it had then, the step types that entry uses and the runbook's summary. A
file whose ``stat`` still says exactly that has not been written since (a write changes its change time, which
no tool can set back), so loading the catalog neither reads it nor opens its cache entry; any other file is read,
hashed and looked up as before, and the index is brought up to date. A command that needs the runbook reads the
file then and compiles (or decodes) what it holds, so what runs is always the file's current content.

The index lives in the compile cache directory (``folders/<hash of the folder's real path>.json``, private like the
entries), is written atomically when it changed, and is only a speed-up: a missing, damaged or foreign index, or
one written by other code (another runbook version, edited step types), is ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from runner.compile_cache import CompileCache

__all__ = ["FolderIndex", "FolderIndexes", "Known"]

FORMAT = 1
log = logging.getLogger("runbook.cache")


class Known(NamedTuple):
    """What the index knows of one file."""

    key: str
    types: list[str]
    summary: dict[str, Any]


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class FolderIndex:
    """The index of one folder (see the module docstring)."""

    def __init__(self, cache: CompileCache, folder: str, code: str) -> None:
        self.folder, self.code = os.path.realpath(folder), code
        digest = hashlib.sha256(self.folder.encode()).hexdigest()[:32]
        self.path = os.path.join(cache.directory, "folders", f"{digest}.json")
        self._files: dict[str, list[Any]] = {}
        self._seen: set[str] = set()
        self._dirty = False
        try:
            with open(self.path, "rb") as f:
                doc = json.load(f)
            if doc.get("format") == FORMAT and doc.get("code") == code and doc.get("folder") == self.folder:
                self._files = dict(doc["files"])
        except FileNotFoundError:
            pass
        except Exception as exc:  # damaged or foreign: start afresh
            log.debug("compile cache: folder index %s not used: %s", self.path, exc)

    def get(self, name: str, st: os.stat_result) -> Known | None:
        """What is known of file ``name`` if its ``stat`` is unchanged since it was indexed, else None."""
        self._seen.add(name)
        record = self._files.get(name)
        if record is None or record[:4] != _signature(st):
            return None
        return Known(record[4], record[5], record[6])

    def put(self, name: str, st: os.stat_result, known: Known) -> None:
        """Index file ``name`` (a regular file) as ``known`` with its current ``stat``."""
        self._seen.add(name)
        if stat.S_ISREG(st.st_mode):
            self._files[name] = [*_signature(st), known.key, known.types, known.summary]
            self._dirty = True

    def save(self) -> None:
        """Write the index if it changed (files no longer seen in the folder are forgotten); never fails."""
        gone = set(self._files) - self._seen
        for name in gone:
            del self._files[name]
        if not (self._dirty or gone):
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": FORMAT, "code": self.code, "folder": self.folder, "files": self._files}, f,
                          separators=(",", ":"))  # fmt: skip
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("compile cache: folder index %s not written: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class FolderIndexes:
    """The folder indexes one catalog load reads and updates (one per folder holding runbook files)."""

    def __init__(self, cache: CompileCache | None) -> None:
        self.cache = cache
        self._by_folder: dict[str, FolderIndex | None] = {}

    def of(self, file: os.PathLike[str]) -> FolderIndex | None:
        """The index of ``file``'s folder (None when there is no usable cache)."""
        folder = os.path.dirname(os.fspath(file)) or "."
        if folder not in self._by_folder:
            self._by_folder[folder] = self.cache.index(folder) if self.cache is not None else None
        return self._by_folder[folder]

    def save(self) -> None:
        """Write the indexes that changed."""
        for index in self._by_folder.values():
            if index is not None:
                index.save()
