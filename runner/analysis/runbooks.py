"""Across runbooks: sub-runbooks exist and load, get the params they take, and never start themselves again."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from runner.errors import Problem
from runner.steptypes import has_template

if TYPE_CHECKING:
    from runner.catalog import Catalog, LoadedRunbook

__all__ = ["Finder", "check_cycles", "check_subrunbooks", "subrunbook_steps"]

Path_ = tuple[str | int, ...]


class Finder:
    """Where sub-runbooks are looked up: the catalog being checked, then ``more`` in order (``validate FILE``: the
    file's own directory, then the project's search path), the first that knows a name winning."""

    def __init__(self, catalog: Catalog, more: Sequence[Catalog] = ()) -> None:
        self.catalogs = (catalog, *more)

    def get(self, name: str) -> LoadedRunbook | None:
        """The runbook called ``name`` that loads, or None."""
        for catalog in self.catalogs:
            if name in catalog:
                rb = catalog.runbooks.get(name)
                if rb is not None:
                    return rb
            if name in catalog.invalid:
                return None
        return None

    def problems(self, name: str) -> list[Problem] | None:
        """The problems of the file called ``name`` that does not load, or None."""
        for catalog in self.catalogs:
            if name in catalog:
                return None
            if name in catalog.invalid:
                return catalog.invalid[name]
        return None

    def names(self) -> list[str]:
        """Every name a sub-runbook step may use, sorted."""
        return sorted({n for catalog in self.catalogs for n in catalog.names()})


def subrunbook_steps(rb: LoadedRunbook) -> Iterator[tuple[Path_, str, dict[str, Any]]]:
    """(path of the action in the compiled JSON, child name, params as written) of each sub-runbook action."""
    for i, step in enumerate(rb.spec.steps):
        for key, action in (("action", step.action), ("rollback", step.rollback)):
            if action is not None and action.type == "runbook" and isinstance(action.config, dict):
                params = action.config.get("params")
                yield ("steps", i, key), str(action.config.get("name")), params if isinstance(params, dict) else {}


def check_subrunbooks(rb: LoadedRunbook, finder: Finder) -> list[Problem]:
    """Each sub-runbook exists and loads; its required params are given, no unknown one is, literal values fit."""
    from runner.analysis import locate

    out: list[Problem] = []
    for path, name, given in subrunbook_steps(rb):
        at: Path_ = (*path, "config")
        child = finder.get(name)
        if child is None:
            broken = finder.problems(name)
            if broken:
                out.append(locate(rb, (*at, "name"), f"sub-runbook '{name}' does not load ({broken[0]}); fix that file first"))
            else:
                import difflib

                names = finder.names()
                close = difflib.get_close_matches(name, [n for n in names if n != rb.name], n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"runbooks: {', '.join(names[:10]) or 'none'}"
                out.append(locate(rb, (*at, "name"), f"no runbook named '{name}' for this sub-runbook step ({hint})"))
            continue
        out += _params(rb, at, child, given)
    return out


def _params(rb: LoadedRunbook, at: Path_, child: LoadedRunbook, given: dict[str, Any]) -> list[Problem]:
    from pydantic import ValidationError as PydanticValidationError

    from runner.analysis import locate

    out = []
    declared = child.spec.params
    for key in given:
        if key not in declared:
            takes = ", ".join(declared) or "no params"
            out.append(
                locate(rb, (*at, "params", key), f"sub-runbook '{child.name}' has no param '{key}' (it takes: {takes})", value=False)
            )
    missing = [n for n, p in declared.items() if p.is_required() and n not in given]
    if missing:
        where = (*at, "params") if given else at
        out.append(locate(rb, where, f"sub-runbook '{child.name}' needs param{'s' if len(missing) > 1 else ''} "
                                     f"{', '.join(repr(m) for m in missing)}, which this step does not give"))  # fmt: skip
    literal = {k: v for k, v in given.items() if k in declared and not has_template(v)}
    if literal:
        try:
            child.params_model.model_validate(literal)
        except PydanticValidationError as exc:
            for err in exc.errors(include_url=False):
                key = str(err["loc"][0]) if err["loc"] else ""
                if key in literal and err["type"] != "missing":
                    out.append(locate(rb, (*at, "params", str(key)),
                                      f"param '{key}' of sub-runbook '{child.name}': {err['msg']} (got {literal[key]!r})"))  # fmt: skip
    return out


def check_cycles(catalog: Catalog, finder: Finder | None = None) -> list[Problem]:
    """A runbook that starts itself again through sub-runbooks (directly or not) would never finish: each step
    on such a cycle is reported, naming the whole cycle (the steps of ``catalog``'s runbooks; with ``finder``, a
    cycle may pass through the runbooks it finds elsewhere)."""
    from runner.analysis import locate

    finder = finder or Finder(catalog)
    edges: dict[str, list[tuple[str, Path_]]] = {}
    todo = [rb.name for rb in catalog]
    while todo:
        name = todo.pop()
        found = finder.get(name) if name not in edges else None
        if found is not None:
            edges[name] = [(child, (*path, "config", "name")) for path, child, _ in subrunbook_steps(found)]
            todo += [child for child, _ in edges[name] if child not in edges]
    out: list[Problem] = []
    seen: set[tuple[str, ...]] = set()
    for start in sorted(edges):
        if start not in catalog:
            continue  # a cycle is reported where it passes through the runbooks checked
        for cycle in _cycles_from(start, edges):
            key = _canonical(cycle)
            if key in seen:
                continue
            seen.add(key)
            text = " → ".join([*cycle, cycle[0]])
            for i, name in enumerate(cycle):
                nxt = cycle[(i + 1) % len(cycle)]
                if name not in catalog:
                    continue
                for child, path in edges[name]:
                    if child == nxt:
                        out.append(locate(catalog.runbooks[name], path, f"sub-runbook cycle: {text} (a run would start "
                                                                          "itself again and never finish)"))  # fmt: skip
                        break
    return out


def _cycles_from(start: str, edges: dict[str, list[tuple[str, Path_]]]) -> Iterator[list[str]]:
    """Simple cycles through ``start`` (depth-first, each path visiting a runbook once)."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    budget = 10_000  # paths explored per start: a catalog's graph is small; a pathological one stays bounded
    while stack and budget:
        budget -= 1
        node, path = stack.pop()
        for child, _ in edges.get(node, []):
            if child == start:
                yield path
            elif child not in path and child in edges and len(path) < 64:
                stack.append((child, [*path, child]))


def _canonical(cycle: list[str]) -> tuple[str, ...]:
    i = cycle.index(min(cycle))
    return tuple(cycle[i:] + cycle[:i])
