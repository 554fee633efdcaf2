"""The units a step runs as: itself, one per fan-out target (``targets``), or one per item (``for_each``).

A unit of a step that fans out is named: a target by its inventory name, an item by its *key*. Each named unit
keeps its own :class:`~runner.store.progress.TargetRecord` in its step's progress, under that name, so a
resumed run re-runs only the units that did not finish (the same journaling, batch limits and resume rules for
hosts and for items).

**The key of an item** (what ``status``, ``logs --target`` and ``steps.ID.output`` name it by) is

- a string item: the string itself (``web1``);
- a mapping with a ``name`` (else an ``id``) that is a string or a number: that value (``{name: db, size: 3}``
  is ``db``);
- any other item: its JSON text, keys sorted (``3``, ``true``, ``["a", 1]``, ``{"a": 1}``); an empty string is
  ``""``.

A key longer than 100 characters is cut and ends with ``~`` and 12 hex digits of the SHA-256 of the whole key.
Two items with one key are an error (each would overwrite the other's record): give each a distinct ``name``.

A unit's ``target`` dict (the engine's handle on it) is the inventory host for a target, and
``{"name": KEY, "item": VALUE}`` for an item; :func:`host_of` tells them apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runner.errors import StepFailed

if TYPE_CHECKING:
    from runner.model import Step
    from runner.store.records import StepRecord
    from runner.templating import Renderer

__all__ = ["ITEM", "MAX_KEY", "host_of", "item_key", "item_units", "resolve_units", "stored_target"]

ITEM = "item"
"""The key of a ``for_each`` unit's target dict that holds its item (an inventory host never has it)."""
MAX_KEY = 100


def item_key(item: Any) -> str:
    """The key of a ``for_each`` item (see the module doc)."""
    if isinstance(item, str) and item:
        key = item
    elif isinstance(item, Mapping) and _scalar(item.get("name")) is not None:
        key = str(_scalar(item.get("name")))
    elif isinstance(item, Mapping) and _scalar(item.get("id")) is not None:
        key = str(_scalar(item.get("id")))
    else:
        key = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
    if len(key) > MAX_KEY:
        key = key[: MAX_KEY - 13] + "~" + hashlib.sha256(key.encode()).hexdigest()[:12]
    return key


def _scalar(value: Any) -> str | int | float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    return value if isinstance(value, str | int | float) else None


def item_units(items: Any, step_id: str) -> list[dict[str, Any]]:
    """The unit targets of a rendered ``for_each`` value; :class:`StepFailed` if it is not a list or keys repeat."""
    if isinstance(items, tuple):
        items = list(items)
    if not isinstance(items, list):
        raise StepFailed(f"step '{step_id}': for_each gave {type(items).__name__} {_short(items)}, expected a list")
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(items):
        key = item_key(item)
        if key in seen:
            raise StepFailed(f"step '{step_id}': for_each items #{seen[key] + 1} and #{i + 1} have the same key '{key}'; "
                             "give each item a distinct 'name' (a unit's record is kept under its key)")  # fmt: skip
        seen[key] = i
        out.append({"name": key, ITEM: item})
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_units(step: Step, renderer: Renderer, tctx: Mapping[str, Any], *, file: str,
                  inventory: str | None) -> list[dict[str, Any]]:  # fmt: skip
    """The targets (hosts through the inventory) or items of a step that fans out, rendered with ``tctx``.

    Raises :class:`~runner.errors.UsageError` for a template or inventory problem, :class:`StepFailed` for targets
    that resolve to no host or items that are not a list or repeat a key. An empty ``for_each`` list gives no unit.
    """
    if step.for_each is not None:
        items = renderer.render(step.for_each, tctx, file=file, step=step.id, field="for_each")
        return item_units(items, step.id)
    from runner.inventory import load_inventory

    value = renderer.render(step.targets, tctx, file=file, step=step.id, field="targets")
    targets = load_inventory(inventory).resolve(value)
    if not targets:
        raise StepFailed(f"step '{step.id}': targets {step.targets!r} resolved to no hosts")
    return targets


def host_of(target: dict[str, Any] | None) -> dict[str, Any] | None:
    """The inventory host of a unit's target dict (None for an item, or a step that does not fan out)."""
    return None if target is None or ITEM in target else target


def stored_target(step: Step, rec: StepRecord, name: str) -> dict[str, Any]:
    """A unit's target dict rebuilt from its stored record (an item's value is kept in it; a host's name names it)."""
    if step.for_each is not None:
        return {"name": name, ITEM: rec.progress.targets[name].item}
    return {"name": name}
