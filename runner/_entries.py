"""The catalog's entries: a runbook's summary (what listing shows, known without decoding the runbook) and a
runbook known by that summary until a command needs it (see :mod:`runner.catalog`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.errors import Problem, RunbookNotFound, ValidationError

if TYPE_CHECKING:
    from runner.catalog import Catalog, LoadedRunbook

__all__ = ["Entry", "RunbookMap", "RunbookSummary", "lazy_entry", "summary_of"]


@dataclass(frozen=True)
class RunbookSummary:
    """What listing a runbook shows, known without decoding it (kept in its compile cache entry's header)."""

    name: str
    description: str
    version: str
    tags: tuple[str, ...]
    file: str
    steps: int
    params: tuple[tuple[str, bool], ...]
    """(name, required) of each declared param, in order."""
    params_schema: dict[str, Any]

    def as_dict(self, *, with_file: bool = True) -> dict[str, Any]:
        """The JSON shape of one catalog entry (``list --json``, the HTTP catalog, MCP)."""
        out = {"name": self.name, "description": self.description, "version": self.version, "tags": list(self.tags),
               "file": self.file, "steps": self.steps, "params_schema": self.params_schema}  # fmt: skip
        if not with_file:  # a cache entry serves the same content found in any file
            del out["file"]
            out["params"] = [list(p) for p in self.params]
        return out

    @classmethod
    def from_cache(cls, doc: dict[str, Any], file: str) -> RunbookSummary:
        """A summary from a compile cache header (written by :meth:`as_dict` with ``with_file=False``)."""
        return cls(doc["name"], doc["description"], str(doc["version"]), tuple(doc["tags"]), file, int(doc["steps"]),
                   tuple((str(n), bool(r)) for n, r in doc["params"]), doc["params_schema"])  # fmt: skip


def summary_of(rb: LoadedRunbook) -> RunbookSummary:
    """The summary of a loaded runbook."""
    spec = rb.spec
    return RunbookSummary(spec.name, spec.description, str(spec.version), tuple(spec.tags), rb.file, len(spec.steps),
                          tuple((n, p.is_required()) for n, p in spec.params.items()), rb.params_model.model_json_schema())  # fmt: skip


class Entry:
    """One runbook of the catalog: loaded already, or known by its summary and compiled (a cache hit: decoded) on use."""

    def __init__(self, file: str, *, rb: LoadedRunbook | None = None, summary: RunbookSummary | None = None,
                 compile: Callable[[], LoadedRunbook] | None = None) -> None:  # fmt: skip
        self.file, self._rb, self._summary, self._compile = file, rb, summary, compile

    def load(self) -> LoadedRunbook:
        """The compiled runbook (decoded from the cache, or compiled again if the entry no longer serves)."""
        if self._rb is None:
            assert self._compile is not None and self._summary is not None
            rb = self._compile()
            if rb.name != self._summary.name:  # only a cache entry edited by hand could say otherwise
                raise ValidationError([Problem(f"runbook is named '{rb.name}', not '{self._summary.name}'", file=self.file)])
            self._rb = rb
        return self._rb

    def summary(self) -> RunbookSummary:
        """The runbook's summary, without decoding it when the cache gave one."""
        if self._summary is None:
            self._summary = summary_of(self.load())
        return self._summary


class RunbookMap(Mapping[str, "LoadedRunbook"]):
    """A catalog's runbooks by name: membership and names are free, a value is decoded when read (a runbook that
    no longer compiles then joins the catalog's ``invalid`` ones, and reads as missing)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __getitem__(self, name: str) -> LoadedRunbook:
        try:
            return self._catalog.get(name)
        except (ValidationError, RunbookNotFound):
            raise KeyError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._catalog

    def __iter__(self) -> Iterator[str]:
        return iter(self._catalog.names())

    def __len__(self) -> int:
        return len(self._catalog.names())


def lazy_entry(file: str, summary: dict[str, Any], compile: Callable[[], LoadedRunbook]) -> tuple[str, Entry]:
    """(name, entry) of a runbook known by its cached ``summary``, compiled by ``compile`` when first used."""
    known = RunbookSummary.from_cache(summary, file)
    return known.name, Entry(file, summary=known, compile=compile)
