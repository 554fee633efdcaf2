"""Turning samples into figures: medians, slopes, ratios to the raw floor, the issue-3 targets, and the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from _measure import Sample, fit_slope, summarize

__all__ = ["Target", "analyse", "format_table", "quiet", "targets"]

SLOPE_LIMIT = 1.5  # runbook's per-step time, as a multiple of the raw floor's
WHOLE_LIMIT = 3.0  # runbook's whole-process time at N=100, as a multiple of the raw floor's
MEMORY_LIMIT_MIB = 40.0  # peak RSS of `runbook run`
MIN_QUIET = 3  # fewer quiet samples than this: summarise all of them (and say the figure is not reliable)


@dataclass
class Target:
    """One issue-3 target and whether this run met it."""

    name: str
    value: float | None
    limit: float
    detail: str
    strict: bool = False  # the limit itself fails ("under 40 MiB")

    @property
    def passed(self) -> bool:
        """Measured and within the limit (a target that could not be measured does not pass)."""
        if self.value is None:
            return False
        return self.value < self.limit if self.strict else self.value <= self.limit

    def line(self) -> str:
        """``PASS  name: detail`` for the console."""
        verdict = "PASS" if self.passed else ("FAIL" if self.value is not None else "SKIP")
        return f"{verdict}  {self.name}: {self.detail}"


def quiet(runs: list[Sample], max_delay: float) -> list[Sample]:
    """The samples whose process hardly waited for a CPU (all of them where that is not measurable)."""
    return [r for r in runs if r.delay is None or r.delay <= max_delay]


def analyse(samples: dict[str, dict[int, list[Sample]]], *, max_delay: float, reps: int) -> dict[str, dict[str, Any]]:
    """Per system: per-N summaries (of the quiet samples when there are 3 or more), slopes and ratios to the raw floor."""
    out: dict[str, dict[str, Any]] = {}
    for name, by_n in samples.items():
        per_n = {}
        for n, runs in sorted(by_n.items()):
            calm = quiet(runs, max_delay)
            per_n[n] = summarize(calm if len(calm) >= MIN_QUIET else runs)
            per_n[n].update(samples=len(runs), quiet=len(calm), reliable=len(calm) >= reps,
                            peak_rss_mib=max(r.maxrss_mib for r in runs))  # memory does not suffer from contention  # fmt: skip
        medians = {n: s["median_ms"] for n, s in per_n.items()}
        lo, hi = min(medians), max(medians)
        out[name] = {
            "per_n": per_n,
            "slope_fit_ms": fit_slope(medians),
            "slope_two_point_ms": (medians[hi] - medians[lo]) / (hi - lo) if hi > lo else None,
            "peak_rss_mib": max(s["peak_rss_mib"] for s in per_n.values()),
            "reliable": all(s["reliable"] for s in per_n.values()),
        }
    floor = out.get("raw")
    for entry in out.values():
        entry["vs_floor"] = _ratios(entry, floor) if floor else {}
    return out


def _ratios(entry: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    whole = {n: s["median_ms"] / floor["per_n"][n]["median_ms"] for n, s in entry["per_n"].items() if n in floor["per_n"]}
    slope = entry["slope_fit_ms"] / floor["slope_fit_ms"] if entry["slope_fit_ms"] is not None and floor["slope_fit_ms"] else None
    return {"whole_process": whole, "slope_fit": slope, "peak_rss": entry["peak_rss_mib"] / floor["peak_rss_mib"]}


def targets(results: dict[str, dict[str, Any]]) -> list[Target]:
    """The three targets of issue 3, evaluated on ``results`` (SKIP when raw or runbook was not measured)."""
    rb, floor = results.get("runbook"), results.get("raw")
    if rb is None or floor is None:
        why = "needs both raw and runbook measured"
        return [Target(SLOPE, None, SLOPE_LIMIT, why), Target(WHOLE, None, WHOLE_LIMIT, why), Target(MEMORY, None, MEMORY_LIMIT_MIB, why)]
    return [_slope_target(rb, floor), _whole_target(rb, floor), _memory_target(rb)]


SLOPE, WHOLE, MEMORY = "per-step overhead", "100-step run, whole process", "peak memory"


def _slope_target(rb: dict[str, Any], floor: dict[str, Any]) -> Target:
    ratio = rb["vs_floor"].get("slope_fit")
    if ratio is None or 100 not in rb["per_n"] or len(rb["per_n"]) < 2:
        return Target(SLOPE, None, SLOPE_LIMIT, "needs N=100 and at least one smaller N measured")
    detail = (f"runbook {rb['slope_fit_ms']:.2f} ms/step vs raw floor {floor['slope_fit_ms']:.2f} ms/step"
              f" = {ratio:.2f}x (target <= {SLOPE_LIMIT}x)")  # fmt: skip
    return Target(SLOPE, ratio, SLOPE_LIMIT, detail)


def _whole_target(rb: dict[str, Any], floor: dict[str, Any]) -> Target:
    ratio = rb["vs_floor"]["whole_process"].get(100)
    if ratio is None:
        return Target(WHOLE, None, WHOLE_LIMIT, "N=100 was not measured")
    detail = (f"runbook {rb['per_n'][100]['median_ms']:.0f} ms vs raw floor {floor['per_n'][100]['median_ms']:.0f} ms"
              f" = {ratio:.2f}x (target <= {WHOLE_LIMIT}x)")  # fmt: skip
    return Target(WHOLE, ratio, WHOLE_LIMIT, detail)


def _memory_target(rb: dict[str, Any]) -> Target:
    rss = float(rb["peak_rss_mib"])
    return Target(
        MEMORY, rss, MEMORY_LIMIT_MIB, f"runbook peak RSS {rss:.1f} MiB over all runs (target < {MEMORY_LIMIT_MIB:g} MiB)", strict=True
    )


def format_table(results: dict[str, dict[str, Any]], versions: dict[str, str]) -> str:
    """A fixed-width table: medians per N, slopes, memory and ratios to the floor."""
    ns = sorted({n for entry in results.values() for n in entry["per_n"]})
    top = max(ns)
    head = ["system", *[f"N={n} ms" for n in ns], f"CPU N={top} ms", "ms/step fit", "ms/step 2pt", "peak MiB", "x floor slope",
            *[f"x floor N={n}" for n in ns]]  # fmt: skip
    rows = [head]
    for name, entry in results.items():
        per_n, ratios = entry["per_n"], entry["vs_floor"]
        rows.append([
            name,
            *[f"{per_n[n]['median_ms']:.1f}" if n in per_n else "-" for n in ns],
            f"{per_n[top]['cpu_median_ms']:.1f}" if top in per_n else "-",
            _num(entry["slope_fit_ms"], 2), _num(entry["slope_two_point_ms"], 2), f"{entry['peak_rss_mib']:.1f}",
            _num(ratios.get("slope_fit"), 2, "x"),
            *[_num(ratios.get("whole_process", {}).get(n), 2, "x") for n in ns],
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.append("")
    for name, entry in results.items():
        calm = ", ".join(f"N={n} {s['quiet']}/{s['samples']}" for n, s in entry["per_n"].items())
        lines.append(
            f"  {name}: {versions.get(name, '?')}; quiet samples {calm}{'' if entry['reliable'] else ' (fewer quiet samples than --reps: may be inflated)'}"
        )
    return "\n".join(lines)


def _num(value: float | None, digits: int, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"
