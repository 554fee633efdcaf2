"""What a template names, checked against what the runbook declares and what a step can see when it runs.

A step's templates see ``params``, ``secrets``, ``run`` (``id``, ``runbook``, ``started_by``, ``trigger``),
``alert``, ``steps.ID.output`` and ``steps.ID.state`` of the steps *before* it, and ``target`` (``name``,
``address``, ``port``, ``user``, ``key``, ``known_hosts``, ``vars``) in a step with ``targets``, ``item`` (any value)
in a step with ``for_each``. A name outside
that fails the run at that step (``'dict object' has no attribute 'c'``) after the steps before it changed
things; here it is found before anything runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.templating import Renderer

__all__ = ["RUN_FIELDS", "STEP_FIELDS", "TARGET_FIELDS", "Scope", "StepInfo", "check_template", "reads_secret"]

RUN_FIELDS = frozenset({"id", "runbook", "started_by", "trigger"})
TARGET_FIELDS = frozenset({"name", "address", "port", "user", "key", "known_hosts", "vars"})
STEP_FIELDS = frozenset({"output", "state"})
NAMES = ("params", "steps", "run", "secrets", "alert", "target", "item")


@dataclass(frozen=True)
class StepInfo:
    """What a template may rely on about one step of the runbook."""

    index: int
    type: str
    output_fields: frozenset[str] | None  # None: not known (a python step, a fan-out step keyed by target)
    never_runs: bool = False  # `when: false`


@dataclass
class Scope:
    """What one template can see where it is written."""

    params: Collection[str]
    secrets: Collection[str]
    steps: dict[str, StepInfo]
    index: int | None = None  # the step the template belongs to (None: not in a step)
    self_visible: bool = False  # a rollback runs after its own step finished
    target: bool = False  # in a step with targets
    item: bool = False  # in a step with for_each
    only: frozenset[str] | None = None  # names the place allows at all (the lock: params and run.started_by)
    place: str = ""
    rebound: set[str] = field(default_factory=set)


def check_template(renderer: Renderer, text: str, scope: Scope) -> list[str]:
    """Problems with ``text`` (a template string) in ``scope``, as messages; the first is a syntax error if any."""
    from jinja2 import TemplateSyntaxError, meta, nodes

    try:
        tree = renderer.env.parse(text)
    except TemplateSyntaxError as exc:
        return [f"template syntax error: {exc.message}" + (f" (line {exc.lineno} of the template)" if "\n" in text else "")]
    scope.rebound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    problems: list[str] = []
    known = {*NAMES, *renderer.env.globals}
    for name in sorted(meta.find_undeclared_variables(tree) - known):
        problems.append(f"template {text!r} names '{name}', which templates do not have (they see: {', '.join(NAMES)})")
    for root, keys in _chains(tree):
        message = _check_chain(root, keys, scope)
        if message is not None and f"template {text!r} {message}" not in problems:
            problems.append(f"template {text!r} {message}")
    return problems


def _chains(tree: Any) -> Iterator[tuple[str, list[str]]]:
    """(root name, constant keys) of each attribute/item chain on a name: ``steps.a.output['x']`` → steps, [a, output, x].

    A chain stops before a computed key (``params[name]``) and before a method call (``params.get(...)``).
    """
    from jinja2 import nodes

    called = {id(c.node) for c in tree.find_all(nodes.Call) if isinstance(c.node, nodes.Getattr)}
    inner = {id(n.node) for n in tree.find_all((nodes.Getattr, nodes.Getitem))}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in inner and id(node) not in called:
            continue  # part of a longer chain, checked with it
        keys: list[str | None] = []
        current: Any = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            if id(current) in called:
                keys = []  # a method: what is under it is the object's, not a field
            elif isinstance(current, nodes.Getattr):
                keys.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str):
                keys.append(current.arg.value)
            else:
                keys = [None]  # computed at run time: nothing after it is known
            current = current.node
        if isinstance(current, nodes.Name) and current.ctx == "load":
            ordered = list(reversed(keys))
            cut = ordered.index(None) if None in ordered else len(ordered)
            yield current.name, [k for k in ordered[:cut] if k is not None]
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in ("target", "item"):
            yield name.name, []  # `target` / `item` on their own (`{{ item }}`) need a fan-out too


def _check_chain(root: str, keys: list[str], scope: Scope) -> str | None:
    if root in scope.rebound or root not in NAMES:
        return None
    if scope.only is not None and root not in scope.only:
        return f"names '{root}', which {scope.place} does not see (only {', '.join(sorted(scope.only))})"
    if root == "item":
        return None if scope.item else "names 'item', which is set only in a step with 'for_each' (once per item)"
    if root == "target":
        if not scope.target:
            return "names 'target', which is set only in a step with 'targets' (a fan-out over hosts)"
        if keys and keys[0] not in TARGET_FIELDS:
            return f"names 'target.{keys[0]}'; a target has: {', '.join(sorted(TARGET_FIELDS))}"
        return None
    if not keys:
        return None
    first = keys[0]
    if root == "params" and first not in scope.params:
        return f"refers to param '{first}', which the runbook does not declare (params: {', '.join(sorted(scope.params)) or 'none'})"
    if root == "secrets" and first not in scope.secrets:
        return f"refers to secret '{first}', which the runbook does not declare (secrets: {', '.join(sorted(scope.secrets)) or 'none'})"
    if root == "run" and first not in RUN_FIELDS:
        return f"names 'run.{first}'; run has: {', '.join(sorted(RUN_FIELDS))}"
    if root == "run" and scope.only is not None and first != "started_by":
        return f"names 'run.{first}', which {scope.place} does not see (only run.started_by)"
    if root == "steps":
        return _check_step(keys, scope)
    return None


def _check_step(keys: list[str], scope: Scope) -> str | None:
    ident = keys[0]
    info = scope.steps.get(ident)
    if info is None:
        return f"refers to step '{ident}', which the runbook does not declare (steps: {', '.join(sorted(scope.steps))})"
    if scope.index is not None:
        if info.index > scope.index:
            return (f"refers to step '{ident}', which runs after this one: a step sees only the steps before it "
                    "(move it earlier, or read it in a later step)")  # fmt: skip
        if info.index == scope.index and not scope.self_visible:
            return f"refers to step '{ident}' itself, whose output and state are known only once it has finished"
    if info.never_runs:
        return f"refers to step '{ident}', which never runs (its 'when' is false)"
    if len(keys) > 1 and keys[1] not in STEP_FIELDS:
        return f"names 'steps.{ident}.{keys[1]}'; a step has: {', '.join(sorted(STEP_FIELDS))}"
    if len(keys) > 2 and keys[1] == "output" and info.output_fields is not None and keys[2] not in info.output_fields:
        return (f"names 'steps.{ident}.output.{keys[2]}', which the output of a '{info.type}' step does not have "
                f"(it has: {', '.join(sorted(info.output_fields))})")  # fmt: skip
    return None


def reads_secret(renderer: Renderer, text: str, secret_params: Collection[str]) -> bool:
    """True if the template ``text`` reads a secret: ``secrets`` (any of it), or a secret param (``params`` passed
    whole counts when the runbook has secret params). A template that does not parse reads nothing."""
    from jinja2 import TemplateSyntaxError, nodes

    try:
        tree = renderer.env.parse(text)
    except TemplateSyntaxError:
        return False
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name == "secrets":
            return True
    if not secret_params:
        return False
    for root, keys in _chains(tree):
        if root == "params" and (not keys or keys[0] in secret_params):
            return True
    used = {id(n.node) for n in tree.find_all((nodes.Getattr, nodes.Getitem))}
    return any(n.ctx == "load" and n.name == "params" and id(n) not in used for n in tree.find_all(nodes.Name))
