"""The safe YAML loader: positions, and refusal of aliases, merge keys, duplicate keys and oversize input."""

from __future__ import annotations

import time

import pytest

from runner.errors import ValidationError
from runner.yamlsafe import load_yaml


def test_positions_are_one_based_line_and_column() -> None:
    doc = load_yaml("name: x\nsteps:\n  - id: a\n    shell: [true]\n", "f.yaml")
    assert doc.data == {"name": "x", "steps": [{"id": "a", "shell": [True]}]}
    assert doc.position(("steps", 0, "shell")) == (4, 5)
    assert doc.position(("steps", 0, "shell", 0)) == (4, 13)
    assert doc.position(("steps", 0, "nonexistent")) == (3, 5), "falls back to the nearest ancestor"


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("a: 1\na: 2\n", 2, 1, "duplicate key 'a' (first defined at line 1)"),
        ("a: &x [1]\nb: *x\n", 2, 1, "YAML aliases are not allowed"),
        ("base: {a: 1}\nother:\n  <<: {b: 2}\n", 3, 3, "merge keys"),
        ("a: [\n", 2, 1, "YAML syntax error"),
        ("x: !!python/object:os.system ls\n", 1, 4, "could not determine a constructor"),
        ("? [a, b]\n: 1\n", 1, 3, "mapping keys must be plain scalars"),
    ],
    ids=["duplicate-key", "alias", "merge-key", "syntax", "python-tag", "complex-key"],
)
def test_refusals_are_located(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_yaml(text, "bad.yaml")
    problem = info.value.problems[0]
    assert (problem.file, problem.line, problem.column) == ("bad.yaml", line, col)
    assert message in problem.message


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijk":
        lines.append(f"{name}: &{name} [" + ",".join(["*" + prev] * 9) + "]")
        prev = name
    started = time.process_time()
    with pytest.raises(ValidationError, match="aliases are not allowed"):
        load_yaml("\n".join(lines), "bomb.yaml")
    assert time.process_time() - started < 0.5, "the 9**11-element expansion must never be attempted"


def test_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_MAX_FILE_BYTES", "100")
    with pytest.raises(ValidationError, match="the limit is 100"):
        load_yaml("a: " + "x" * 200, "big.yaml")
    assert load_yaml("a: 1", "small.yaml").data == {"a": 1}


def test_empty_document_is_an_empty_mapping() -> None:
    assert load_yaml("", "empty.yaml").data == {}
