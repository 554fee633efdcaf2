"""Long runbooks (issue 19, bounded memory per run): steps held as text and made into models on use, run views
made from step records as they are read or written, snapshots stored from their encoded chunks.

Peak memory itself is a benchmark figure (``bench/memory_bench.py``), never a timed or sized assertion here; these
tests pin the behaviour that keeps it bounded and show it changes nothing a user sees.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from runner.model import RunbookSpec, Step, Steps
from runner.registry import StepTypeRegistry
from runner.store.records import JSONText, NewRun, RunRecord, RunState, StepRecord
from runner.views import NextAction, RunView, StepView, StepViews, build_view
from tests.conftest import Project
from tests.test_compile_cache import load

N = Steps.MODELS_KEPT + 44  # more steps than a runbook keeps as models


def long_yaml(n: int = N) -> str:
    """``n`` steps; the last echoes the first's output (a template reaching back past every kept model)."""
    steps = [f"  - id: s{i}\n    shell: [echo, 'step {i}']\n" for i in range(n - 1)]
    steps.append(f"  - id: s{n - 1}\n    shell: [echo, 'first said {{{{ steps.s0.output.stdout | trim }}}}']\n")
    return f"name: long\ndescription: {n} steps\nsteps:\n" + "".join(steps)


# ---------------------------------------------------------------------- steps held as text


def test_a_cached_runbook_holds_its_steps_as_text_and_is_the_runbook_a_compile_gives(
    tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry
) -> None:
    file = tmp_path / "long.yaml"
    file.write_text(long_yaml(), encoding="utf-8")
    fresh = load(file, registry)  # compiled (and stored)
    hit = load(file, registry)  # read back
    assert fresh.spec.steps.texts is not None and hit.spec.steps.texts == fresh.spec.steps.texts
    assert fresh.located is None and fresh.positions() is not None  # positions parsed again when a message needs one
    for rb in (fresh, hit):  # the first steps are checked and kept as models; the rest are text
        assert rb.spec.steps.models_held == Steps.MODELS_KEPT
    assert hit.spec == fresh.spec and list(hit.spec.steps) == list(fresh.spec.steps)
    assert hit.spec.steps.ids == tuple(f"s{i}" for i in range(N)) and len(hit.spec.steps) == N
    assert hit.spec.step(f"s{N - 1}") == fresh.spec.step(f"s{N - 1}") and hit.spec.index(f"s{N - 1}") == N - 1
    for _ in hit.spec.steps:  # walking every step never holds more than MODELS_KEPT models
        assert hit.spec.steps.models_held <= Steps.MODELS_KEPT
    assert hit.step_hashes == fresh.step_hashes and hit.content_hash == fresh.content_hash
    snapshot = hit.snapshot()  # what a run stores, joined from the cached lines (nothing decoded yet)
    assert isinstance(snapshot, JSONText) and json.loads(str(snapshot)) == fresh.spec_json
    assert hit.spec_json == fresh.spec_json


def test_steps_select_slice_and_compare_without_making_models(registry: StepTypeRegistry) -> None:
    texts = [json.dumps({"id": f"s{i}", "action": {"type": "shell", "config": {"command": ["true"]}}}).encode() for i in range(5)]
    lazy = Steps.lazy(texts, [f"s{i}" for i in range(5)])
    eager = Steps([Step.model_validate_json(t) for t in texts])
    odd = lazy.select(lambda sid: int(sid[1:]) % 2 == 1)
    assert odd.ids == ("s1", "s3") and odd.models_held == 0 and [s.id for s in odd] == ["s1", "s3"]
    assert lazy[1:3].ids == ("s1", "s2") and lazy[-1].id == "s4" and "s2" in lazy and "s9" not in lazy
    assert lazy == eager and eager == lazy and lazy != eager[:4]
    with pytest.raises(KeyError):
        lazy.get("s9")
    with pytest.raises(ValueError, match="no step 's9'"):
        lazy.index("s9")
    with pytest.raises(IndexError):
        lazy[5]
    spec = RunbookSpec(name="x", steps=lazy)  # a Steps is taken as it is
    assert spec.steps is lazy and RunbookSpec.model_validate_json(spec.model_dump_json()) == spec


def test_a_step_text_that_does_not_match_its_id_is_refused_when_read() -> None:
    text = json.dumps({"id": "other", "action": {"type": "shell", "config": {"command": ["true"]}}}).encode()
    with pytest.raises(ValueError, match="step 0 has id 'other', not 's0'"):
        Steps.lazy([text], ["s0"], check=True)
    with pytest.raises(ValueError, match="1 step texts for 2 step ids"):
        Steps.lazy([text], ["a", "b"])


def test_a_damaged_step_line_makes_the_entry_a_miss(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    file = tmp_path / "long.yaml"
    file.write_text(long_yaml(), encoding="utf-8")
    load(file, registry)
    [entry] = sorted(cache_dir.glob("*.json"))
    good = entry.read_bytes()
    lines = good.split(b"\n")
    lines[-1] = lines[-1].replace(b'"id":"s', b'"id":"t')  # the last step, never made into a model by a run
    entry.write_bytes(b"\n".join(lines))
    rb = load(file, registry)
    assert entry.read_bytes() == good, "compiled again and written again, not read from the damaged entry"
    assert rb.spec.steps.ids[-1] == f"s{N - 1}" and rb.spec.steps[-1].id == f"s{N - 1}"


# ---------------------------------------------------------------------- a long run, end to end


def test_a_long_runbook_runs_resumes_and_reads_back_from_the_cache(project: Project, tmp_path: Path) -> None:
    project.env["RUNBOOK_CACHE_DIR"] = str(tmp_path / "cache")
    project.write("long.yaml", long_yaml())
    first = project.run("run", "long", "--max-steps", str(N - 10), "--json")  # compiles and caches
    assert first.code == 3, first
    rid = first.json()["run_id"]
    done = project.run("resume", rid, "--json")  # the runbook read back from the cache, past its kept models
    assert done.code == 0, done
    view = done.json()
    assert view["state"] == "succeeded" and len(view["steps"]) == N
    assert view["steps"][-1]["output"]["stdout"] == "first said step 0\n"
    again = project.run("run", "long", "--json")  # a new run of the cached runbook
    assert again.code == 0 and [s["state"] for s in again.json()["steps"]] == ["succeeded"] * N
    with sqlite3.connect(project.journal) as conn:
        rows = conn.execute("SELECT typeof(spec), spec FROM run_specs ORDER BY run_id").fetchall()
    assert [t for t, _ in rows] == ["text", "text"]
    assert json.loads(rows[0][1]) == json.loads(rows[1][1])  # compiled, then joined from the cache: one snapshot
    status = project.run("status", rid, "--json").json()
    assert status == {**view, "notices": status["notices"]}


# ---------------------------------------------------------------------- views


def _run() -> RunRecord:
    now = time.time()
    return RunRecord(id="r1", runbook="long", state=RunState.SUCCEEDED, created_at=now, updated_at=now)


def test_a_view_is_made_from_records_and_reads_and_writes_as_a_list_of_step_views() -> None:
    out = {"exit_code": 0, "stdout": "".join(f"line {i}\n" for i in range(100)), "stderr": ""}
    records = [StepRecord("r1", f"s{i}", i, output=out if i == 0 else None) for i in range(3)]
    view = build_view(_run(), records, NextAction(action="none"))
    assert isinstance(view.steps, StepViews) and len(view.steps) == 3 and [s.id for s in view.steps] == ["s0", "s1", "s2"]
    first = view.steps[0]
    assert isinstance(first, StepView) and first.truncated and first.exit_code == 0
    assert first.output["stdout"].splitlines()[-1] == "line 99" and first.sizes == {"stdout": len(out["stdout"])}
    dumped = view.model_dump(mode="json")
    assert [s["id"] for s in dumped["steps"]] == ["s0", "s1", "s2"] and json.loads(view.model_dump_json()) == dumped
    back = RunView.model_validate_json(view.model_dump_json())  # an API client reads it
    assert back == view and back.steps[2] == view.steps[2] and back.steps[0:2] == view.steps[0:2]
    for mode in ("validation", "serialization"):
        steps = RunView.model_json_schema(mode=mode)["properties"]["steps"]
        assert steps["type"] == "array" and steps["items"] == {"$ref": "#/$defs/StepView"}


# ---------------------------------------------------------------------- the stored snapshot


def test_an_encoded_snapshot_is_stored_as_text(tmp_path: Path) -> None:
    from runbook_sqlite.store import SQLiteStore

    store = SQLiteStore(f"sqlite:///{tmp_path}/journal.db")
    try:
        doc = JSONText([b'{"name":"long","note":"caf\xc3\xa9",', b'"steps":[', b'{"id":"a"}', b"]}"])
        assert doc.size == len(str(doc).encode()) and json.loads(str(doc))["note"] == "café"
        run, _ = store.create_run(NewRun(id="01LONG", runbook="long", params={}, started_by="t", content_hash="h",
                                         step_hashes={"a": "1"}, spec=doc, file="long.yaml", step_ids=["a"]))  # fmt: skip
        assert store.get_spec(run.id) == json.loads(str(doc)) and store.get_step_hashes(run.id) == {"a": "1"}
        with sqlite3.connect(tmp_path / "journal.db") as conn:
            assert conn.execute("SELECT typeof(spec) FROM run_specs").fetchall() == [("text",)]
    finally:
        store.close()


def test_a_python_step_gets_the_earlier_outputs_as_a_dict(project: Project, tmp_path: Path) -> None:
    """``ctx.outputs`` is a plain dict (JSON-ready, its own copy), though the engine holds outputs in the records."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "outlib.py").write_text(
        "import json\n"
        "def report(ctx, params):\n"
        "    seen = json.loads(json.dumps(ctx.outputs))\n"
        "    ctx.outputs['scratch'] = 1  # its own copy: changes nothing the engine holds\n"
        "    return {'seen': seen, 'is_dict': type(ctx.outputs) is dict}\n",
        encoding="utf-8",
    )
    project.write(
        "outs.yaml",
        "name: outs\nsteps:\n  - {id: first, shell: [echo, one]}\n  - {id: report, python: {call: 'outlib:report'}}\n"
        "  - {id: after, shell: [echo, '{{ steps.report.output.is_dict }} {{ steps.first.output.stdout | trim }}']}\n",
    )
    res = project.run("run", "outs", "--json", env={"PYTHONPATH": str(lib)})
    assert res.code == 0, res
    steps = {s["id"]: s for s in res.json()["steps"]}
    assert steps["report"]["output"]["is_dict"] is True
    assert steps["report"]["output"]["seen"]["first"]["stdout"] == "one\n" and "scratch" not in steps["report"]["output"]["seen"]
    assert steps["after"]["output"]["stdout"] == "True one\n"


def test_an_output_that_is_not_utf8_is_kept_as_its_escape(project: Project, tmp_path: Path) -> None:
    """A lone surrogate in an output (a file name that is not UTF-8) cannot be written as UTF-8: the journal keeps
    the six characters of its escape, so the step succeeds and every view of it is one JSON document."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "badname.py").write_text("def name(ctx, params):\n    return {'file': 'f\\udcff.log'}\n", encoding="utf-8")
    project.write("bad.yaml", "name: bad\nsteps:\n  - {id: first, shell: [echo, one]}\n  - {id: name, python: {call: 'badname:name'}}\n")
    res = project.run("run", "bad", "--json", env={"PYTHONPATH": str(lib)})
    assert res.code == 0, res
    view = res.json()
    assert [s["state"] for s in view["steps"]] == ["succeeded", "succeeded"]
    assert view["steps"][1]["output"] == {"file": "f\\udcff.log"}
    status = project.run("status", view["run_id"], "--json")
    assert status.code == 0 and status.json()["steps"][1]["output"] == {"file": "f\\udcff.log"}


def test_editing_a_completed_python_steps_function_is_refused_without_accept_changes(project: Project, tmp_path: Path) -> None:
    """A python step's hash covers its function's source: an edit there is behaviour, never words only."""
    lib = tmp_path / "lib"
    lib.mkdir()
    code = lib / "codelib.py"
    code.write_text("def act(ctx, params):\n    return {'n': 1}\n", encoding="utf-8")
    project.write("code.yaml", "name: code\nsteps:\n  - {id: act, python: {call: 'codelib:act'}}\n  - {id: then, shell: [echo, x]}\n")
    env = {"PYTHONPATH": str(lib)}
    first = project.run("run", "code", "--max-steps", "1", "--json", env=env)
    assert first.code == 3, first
    code.write_text("def act(ctx, params):\n    return {'n': 2}\n", encoding="utf-8")
    refused = project.run("resume", first.json()["run_id"], env=env)
    assert refused.code == 2, refused
    assert "completed step 'act' changed" in refused.err and "function source" in refused.err
    ok = project.run("resume", first.json()["run_id"], "--accept-changes", "--json", env=env)
    assert ok.code == 0 and ok.json()["steps"][0]["output"] == {"n": 1}, ok
