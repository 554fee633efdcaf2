"""Executable documentation: the fenced blocks of a Markdown page, and matching a command's output against the one
the page shows.

- A ```` ```console ```` block holds commands (``$ COMMAND``, optionally ending in ``# exit N``: the exit status
  it must end with; 0 otherwise) each followed by the output the page shows for it.
- A block preceded by ``<!-- file: PATH -->`` is a file the reader writes.
- Shown output matches the real output line by line (trailing spaces aside), where a line ``...`` stands for any
  number of lines, a run id (26-character ULID) stands for whatever run id the command printed there (the same
  one every time the page uses it again, commands included), and times (``2026-12-07T13:53:50.827Z``) and
  durations (`` 0.13s``, or none) for any.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Command", "Ids", "blocks", "commands", "match"]

ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
_SPECIAL = re.compile(rf"(?P<ulid>{ULID.pattern})|(?P<time>\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)|(?P<dur> \d+\.\d+s\b)")
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^`\n]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")


@dataclass
class Block:
    """A fenced block: its info string's first word, its text (the fence's indentation removed), where it starts,
    and the HTML-comment directive on the line just above it, if any."""

    kind: str
    text: str
    line: int
    directive: str | None = None


@dataclass
class Command:
    """A ``$ command`` of a console block, the exit status it must end with, and the output shown after it."""

    command: str
    exit_code: int
    shown: list[str] = field(default_factory=list)
    line: int = 0


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the Markdown file at ``path``, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        above = _DIRECTIVE.match(lines[i - 1]) if i else None
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        kind = (opened["info"].split() or [""])[0]
        out.append(Block(kind, "\n".join(body) + "\n", i + 1, above["text"] if above else None))
        i = j + 1
    return out


def commands(block: Block) -> list[Command]:
    """The commands of a console block with their shown output."""
    out: list[Command] = []
    for n, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            text, _, status = line[2:].partition("  # exit ")
            out.append(Command(text.strip(), int(status) if status else 0, line=block.line + 1 + n))
        elif out:
            out[-1].shown.append(line)
        elif line.strip():
            raise AssertionError(f"line {block.line + 1 + n}: output before any command: {line!r}")
    return out


class Ids:
    """Run ids the page shows → the ones the real commands printed."""

    def __init__(self) -> None:
        self.actual: dict[str, str] = {}

    def substitute(self, command: str, where: str) -> str:
        """``command`` with every run id the page showed replaced by the real one."""

        def real(m: re.Match[str]) -> str:
            if m.group(0) not in self.actual:
                raise AssertionError(f"{where}: run id {m.group(0)} is used before any output showed it")
            return self.actual[m.group(0)]

        return ULID.sub(real, command)

    def pattern(self, shown: str) -> tuple[re.Pattern[str], list[str]]:
        """A regex for one shown line, and the page's run ids it captures (in group order)."""
        parts, captured, pos = [], [], 0
        for m in _SPECIAL.finditer(shown):
            parts.append(re.escape(shown[pos : m.start()]))
            if m["ulid"] and m["ulid"] in self.actual:
                parts.append(re.escape(self.actual[m["ulid"]]))
            elif m["ulid"]:
                parts.append(f"({ULID.pattern})")
                captured.append(m["ulid"])
            elif m["time"]:
                parts.append(r"\d{4}-\d\d-\d\dT[\d:.]+Z")
            else:  # a step's time is left out when it is below 5 ms
                parts.append(r"(?: \d+(?:\.\d+)?s)?")
            pos = m.end()
        parts.append(re.escape(shown[pos:]))
        return re.compile("".join(parts)), captured

    def bind(self, page: list[str], real: tuple[str | None, ...]) -> None:
        """Remember that the page's ids ``page`` are the real ``real``; one page id is always one real id."""
        for doc, got in zip(page, real, strict=True):
            assert got is not None
            known = self.actual.setdefault(doc, got)
            if known != got:
                raise AssertionError(f"the page shows {doc} for two different runs ({known} and {got})")


def match(shown: list[str], actual: list[str], ids: Ids, where: str) -> None:
    """Assert ``actual`` output lines are what the page ``shown`` (see the module docstring); binds the run ids."""
    want = [s.rstrip() for s in shown]
    got = [a.rstrip() for a in actual]
    while want and not want[-1]:
        want.pop()
    while got and not got[-1]:
        got.pop()
    if not _match(want, got, ids):
        raise AssertionError(f"{where}: the output differs from what the page shows.\n--- page\n" + "\n".join(want)
                             + "\n--- real\n" + "\n".join(got))  # fmt: skip


def _match(want: list[str], got: list[str], ids: Ids) -> bool:
    if not want:
        return not got
    if want[0] == "...":
        return any(_match(want[1:], got[k:], ids) for k in range(len(got) + 1))
    if not got:
        return False
    regex, captured = ids.pattern(want[0])
    found = regex.fullmatch(got[0])
    if not found:
        return False
    saved = dict(ids.actual)
    ids.bind(captured, found.groups())
    if _match(want[1:], got[1:], ids):
        return True
    ids.actual = saved
    return False
