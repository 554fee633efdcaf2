"""The safe YAML loader: positions, and refusal of aliases, merge keys, duplicate keys and oversize input."""

from __future__ import annotations

import time
from pathlib import Path

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
        ("a: *nowhere\n", 1, 4, "found undefined alias 'nowhere'"),
        ("a: 1\n---\nb: 2\n", 2, 1, "expected a single document in the stream: but found another document"),
        ("a:\n  - &x 1\n  - *x\n", 1, 1, "this refers to the anchor at line 2"),
        ("a: &x 1\nb: &x 2\n", 2, 4, "found duplicate anchor 'x'"),
        ("&k a: 1\nb: *k\n", 2, 1, "YAML aliases are not allowed"),
    ],
    ids=[
        "duplicate-key",
        "alias",
        "merge-key",
        "syntax",
        "python-tag",
        "complex-key",
        "undefined-alias",
        "two-documents",
        "alias-in-a-list",
        "duplicate-anchor",
        "alias-of-a-key",
    ],
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


def test_the_document_is_what_pyyaml_builds_with_the_same_resolvers() -> None:
    """Data is built from the parser's events (no node tree): for every YAML file of this repository it is what
    PyYAML's own composer and constructor give with the loader's resolvers (YAML 1.2 booleans)."""
    import yaml

    from runner.yamlsafe import _loader_class

    root = Path(__file__).resolve().parent.parent
    files = [p for p in (*root.glob("runbooks/**/*.y*ml"), *root.glob("tests/**/*.y*ml"), *root.glob("docs/**/*.y*ml"))]
    samples = [p.read_bytes() for p in files] + [
        b"{1: a, 2.5: b, null: c, false: d, off: e}\n",
        b"d: 2024-01-01\nt: !!str 12\nb: !!binary aGk=\nf: 1e3\nh: 0x1f\nn: ~\n",
        b"s: |\n  multi\n  line\nq: 'it''s'\nl: [a, {b: [c]}]\n",
    ]
    assert len(files) > 20
    checked = 0
    for text in samples:
        try:
            expected = yaml.load(text, Loader=_loader_class())
        except yaml.YAMLError:
            continue  # refused by PyYAML too (load_yaml says where: see the refusal tests)
        if _uses_refused_yaml(text):
            continue
        assert load_yaml(text, "f.yaml").data == ({} if expected is None else expected), text[:200]
        checked += 1
    assert checked > 20


def _uses_refused_yaml(text: bytes) -> bool:
    return (b"*" in text and b"&" in text) or b"<<:" in text


def test_an_explicit_null_document_is_null_and_an_empty_one_is_an_empty_mapping() -> None:
    assert load_yaml("~\n", "f.yaml").data is None and load_yaml("---\n", "f.yaml").data is None
    assert load_yaml("", "f.yaml").data == {} and load_yaml("# only a comment\n", "f.yaml").data == {}
