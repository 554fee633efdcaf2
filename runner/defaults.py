"""``defaults:`` per step type: values written once and merged into every use of that type.

A runbook (or a file it includes) may say::

    defaults:
      http: {base_url: "{{ params.lb_url }}", auth: {bearer: "{{ secrets.lb_token }}"}, allowed_hosts: [lb.internal]}
      shell: {env: {LC_ALL: C}}

and every ``http`` config in the runbook (step actions, rollbacks, probes in ``precondition``, ``check`` and
``verify``, checks nested in configs such as ``wait: {checks}``) gets them. Merge rules (see docs/runbooks.md):

- mappings merge key by key, recursively (``headers``, ``env``, ``auth``): the step's keys win;
- any other value (a string, a number, a list such as ``command`` or ``allowed_hosts``) is replaced whole by the
  step's own;
- a step value of ``null`` removes the default for that key (the type's built-in default applies);
- a step type may take keys that only make sense as defaults (http's ``base_url``) through
  :attr:`~runner.steptypes.StepType.defaults_keys` and :meth:`~runner.steptypes.StepType.resolve_defaults`.

Merging happens at compile time, so the compiled runbook (and each step's hash, which detects edits between a
run and its resume) holds the effective config: editing a default is an edit of every step it reaches. Every
merged value keeps where it was written, so an error in it names the ``defaults:`` line (or the included file).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.registry import StepTypeRegistry
    from runner.yamlsafe import Located

__all__ = ["Defaults", "merge", "merge_tracked"]

Path_ = tuple[str | int, ...]


def merge_tracked(default: Any, value: Any, *, on_default: Callable[[Path_], None], on_value: Callable[[Path_], None],
                  path: Path_ = ()) -> Any:  # fmt: skip
    """``value`` merged over ``default`` (the rules above), calling ``on_default(p)`` / ``on_value(p)`` for each
    key ``p`` (relative to the merged mapping) whose value comes whole from that side."""
    if not (isinstance(default, dict) and isinstance(value, dict)):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if item is None and key in default:
            continue  # `key: null` in the step: no default for it
        if key in default and isinstance(default[key], dict) and isinstance(item, dict):
            out[key] = merge_tracked(default[key], item, on_default=on_default, on_value=on_value, path=(*path, key))
        else:
            out[key] = item
            on_value((*path, key))
    for key, item in default.items():
        if key not in value:
            out[key] = item
            on_default((*path, key))
    return out


def merge(default: Any, value: Any) -> Any:
    """``value`` merged over ``default`` with the documented rules (no position tracking)."""
    return merge_tracked(default, value, on_default=lambda _: None, on_value=lambda _: None)


class Defaults:
    """The ``defaults:`` mapping of a (possibly expanded) runbook document, checked once and applied per config."""

    def __init__(self, located: Located, registry: StepTypeRegistry) -> None:
        self.located, self.registry = located, registry
        self.by_type: dict[str, dict[str, Any]] = {}

    def load(self, raw: Any, add: Callable[[Path_, str], None]) -> None:
        """Check ``raw`` (the document's ``defaults`` value), reporting each problem through ``add(path, message)``.

        Unknown step types and unknown keys are reported here, once, not in every step they would reach.
        """
        if raw is None:
            return
        if not isinstance(raw, dict):
            add(("defaults",), "expected 'defaults' to map step types to their default config: {http: {...}, shell: {...}}")
            return
        names = self.registry.names()
        for type_name, config in raw.items():
            path: Path_ = ("defaults", type_name)
            if type_name not in self.registry:
                close = difflib.get_close_matches(str(type_name), names, n=1)
                guess = f"did you mean '{close[0]}'? " if close else ""
                add(path, f"unknown step type '{type_name}' in defaults: {guess}known: {', '.join(names)}")
                continue
            if not isinstance(config, dict):
                add(path, f"expected a mapping of '{type_name}' config keys")
                continue
            known = self._keys(type_name)
            good = {}
            for key, value in config.items():
                if key in known:
                    good[key] = value
                    continue
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                guess = f"did you mean '{close[0]}'? " if close else ""
                add((*path, key), f"unknown key '{key}' in defaults for '{type_name}': {guess}expected one of {', '.join(sorted(known))}")
            self.by_type[type_name] = good

    def _keys(self, type_name: str) -> set[str]:
        step_type = self.registry.get(type_name)
        fields = step_type.Config.model_fields
        return {*(f.alias or n for n, f in fields.items()), *step_type.defaults_keys}

    def apply(self, type_name: str, config: Any, path: Path_) -> Any:
        """``config`` (written at ``path``, shorthand already expanded) with the defaults of ``type_name`` merged in.

        Values taken from the defaults are linked to where they were written, so errors in them are located there.
        """
        defaults = self.by_type.get(type_name)
        if not defaults or not isinstance(config, dict):
            return config
        step_type = self.registry.get(type_name)
        plain = {k: v for k, v in defaults.items() if k not in step_type.defaults_keys}
        links = self.located.links
        source: Path_ = ("defaults", type_name)

        def from_default(p: Path_) -> None:
            links[(*path, *p)] = (self.located, (*source, *p))

        merged = merge_tracked(plain, config, on_default=from_default, on_value=lambda _: None)
        return step_type.resolve_defaults(merged, defaults)
