"""What steps declare they read and write (``reads:`` / ``writes:``), and when one touches the other.

Both are lists of strings: file paths (``/etc/nginx/nginx.conf``) or any key the runbook's author chooses
(``service:nginx``, ``lb:pool-a``), with templates. Two of them *overlap* when they are equal, or when one is a
path under the other (``/etc/app`` and ``/etc/app/conf.d/x.conf``): a step that writes a directory changes what a
check of a file in it reads, and a check of a directory reads what a step writes inside it.

``writes: []`` says a step changes nothing a later check reads; ``reads: []`` that a step's checks read nothing an
earlier step changes. A missing list says nothing (the plan then assumes the worst, see
:mod:`runner.engine.planner`). Pre-flight uses ``writes`` too: a program or file an earlier step writes is not
reported missing (:attr:`runner.steptypes.Finding.resource`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.templating import Renderer

__all__ = ["covers", "overlaps", "render_effects"]


def overlaps(a: str, b: str) -> bool:
    """True if ``a`` and ``b`` name the same thing, or one is a path under the other."""
    if a == b:
        return True
    a, b = a.rstrip("/") or "/", b.rstrip("/") or "/"
    if a == b:
        return True
    return b.startswith(a if a.endswith("/") else a + "/") or a.startswith(b if b.endswith("/") else b + "/")


def covers(writes: Iterable[str], resource: str) -> bool:
    """True if one of ``writes`` creates or changes ``resource`` (a path, or a program found on ``PATH`` by its name)."""
    for written in writes:
        if overlaps(written, resource):
            return True
        if "/" not in resource and os.path.basename(written.rstrip("/")) == resource:
            return True  # `writes: [/usr/local/bin/tool]` installs the program `tool`
    return False


def render_effects(values: Iterable[str] | None, renderer: Renderer, tctx: Mapping[str, Any], *, file: str, step: str,
                   field: str) -> list[str] | None:  # fmt: skip
    """``values`` rendered as strings (None stays None: nothing declared). Template errors propagate."""
    if values is None:
        return None
    rendered = renderer.render(list(values), tctx, file=file, step=step, field=field)
    out: list[str] = []
    for value in rendered:
        out += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return out
