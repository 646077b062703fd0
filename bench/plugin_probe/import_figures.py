"""From what the watchers saw during a pull to the figures of a run, and of a configuration.

Phase times come from the job (a Python route), instance counts from ``/statistics`` (a
core route, answered even while the plugin holds the GIL). A run's import window is the
interval between the first and the last instance counted.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .watchers import CpuReading, Prober

#: Seconds before the pull request whose latencies are the idle baseline.
IDLE_WINDOW = 1.0

#: Summary key -> where a run keeps the value (keys into nested dicts).
SUMMARY_FIELDS: dict[str, tuple[str, ...]] = {
    "total_s": ("total_s",),
    "import_s": ("import_stored_window_s",),
    "import_phase_s": ("import_phase_s",),
    "instances_per_s": ("import_instances_per_s",),
    "import_speedup_vs_ref": ("import_speedup_vs_ref",),
    "target_cores": ("target_cores_during_import",),
    "python_idle_median_ms": ("latency", "python_idle", "median_ms"),
    "python_import_median_ms": ("latency", "python_import", "median_ms"),
    "python_import_p95_ms": ("latency", "python_import", "p95_ms"),
    "python_import_max_ms": ("latency", "python_import", "max_ms"),
    "core_import_median_ms": ("latency", "core_import", "median_ms"),
    "core_import_p95_ms": ("latency", "core_import", "p95_ms"),
    "other_cores": ("other_cores_during",),
}


@dataclass(frozen=True)
class PullObservation:
    """What the watchers saw during one pull job on the target (``perf_counter`` times)."""

    job_id: str
    t_request: float
    t_end_poll: float
    jobs: list[tuple[float, Any]]       # /jobs/<id> answers (or exceptions)
    counts: list[tuple[float, Any]]     # (CountInstances, target CPU s) (or exceptions)
    prober: Prober
    cpu: CpuReading                     # used from the idle baseline's end to the job's end
    timed_out: str | None               # the run's status if the job never ended

    def phase_times(self) -> tuple[dict[str, float], float | None]:
        """When each job ``Phase`` was first seen, and when ``Success`` was."""
        phases: dict[str, float] = {}
        t_success = None
        for t, value in self.jobs:
            if isinstance(value, dict):
                phases.setdefault(value.get("Content", {}).get("Phase", "?"), t)
                if value.get("State") == "Success" and t_success is None:
                    t_success = t
        return phases, t_success

    def import_window(self, instances: int) -> tuple[tuple[float, float] | None,
                                                     tuple[float, float] | None]:
        """(time, target CPU s) when the first instance was counted, and the last."""
        counts = [(t, v) for t, v in self.counts if isinstance(v, tuple)]
        first = next(((t, v[1]) for t, v in counts if v[0] > 0), None)
        last = next(((t, v[1]) for t, v in counts if v[0] >= instances), None)
        return first, last


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rounded(value: float | None, digits: int) -> float | None:
    """Rounded; None for None and 0, which here means "not measured"."""
    return round(value, digits) if value else None


def timings(seen: PullObservation, instances: int) -> dict[str, Any]:
    """Durations, import rate and CPU of one run."""
    phases, t_success = seen.phase_times()
    first, last = seen.import_window(instances)
    total = (t_success - seen.t_request) if t_success else None
    window = (last[0] - first[0]) if first is not None and last is not None else None
    phase_import = (t_success - phases["Import"]) if t_success and "Import" in phases \
        else None
    wall = seen.t_end_poll - seen.t_request
    return {
        "job_id": seen.job_id,
        "total_s": _rounded(total, 3),
        "import_stored_window_s": _rounded(window, 3),
        "import_phase_s": _rounded(phase_import, 3),
        "import_instances_per_s": round(instances / window, 1) if window else None,
        "phase_first_seen_s": {k: round(v - seen.t_request, 3) for k, v in phases.items()},
        "target_cores_during_import": round((last[1] - first[1]) / window, 2)
        if window and first is not None and last is not None else None,
        "target_cpu_s": round(seen.cpu.target, 2),
        "source_cpu_s": round(seen.cpu.source, 2),
        "bench_cpu_s": round(seen.cpu.bench, 2),
        "other_cores_during": round(max(0.0, seen.cpu.others / wall), 2),
    }


def latencies(seen: PullObservation, instances: int) -> dict[str, Any]:
    """Latency of each probed route in the idle second before the request and during the
    import window (``python_idle``, ``python_import``, ``core_idle``, ``core_import``)."""
    first, last = seen.import_window(instances)
    windows = {"idle": (seen.t_request - IDLE_WINDOW, seen.t_request),
               "import": (first[0] if first else 0.0, last[0] if last else 0.0)}
    result: dict[str, Any] = {}
    for kind in Prober.ROUTES:
        for window, (start, end) in windows.items():
            values = [v * 1000 for v in seen.prober.window(kind, start, end)]
            result[f"{kind}_{window}"] = {
                "n": len(values), "median_ms": round(median(values) or 0, 1),
                "p95_ms": round(percentile(values, 0.95) or 0, 1),
                "max_ms": round(max(values), 1) if values else None}
    return result


def paired_speedups(runs: list[dict[str, Any]]) -> None:
    """``import_speedup_vs_ref``: import time of the repetition's first configuration / this
    run's. Configurations are interleaved, so a pair shares the machine's state of the
    moment: steadier than comparing medians when other load comes and goes."""
    for run in runs:
        ref = next((r for r in runs if r["repetition"] == run["repetition"]), None)
        mine, theirs = run.get("import_stored_window_s"), (ref or {}).get(
            "import_stored_window_s")
        run["import_speedup_vs_ref"] = round(theirs / mine, 3) if mine and theirs else None


def _values(runs: list[dict[str, Any]], path: tuple[str, ...]) -> list[float]:
    """The value at ``path`` of each run that has one."""
    found = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            found.append(float(value))
    return found


def summarize_imports(runs: list[dict[str, Any]], allow_values: list[bool | None],
                      http_values: list[bool]) -> list[dict[str, Any]]:
    """Per configuration, every successful run's figures (the report shows their spread)."""
    paired_speedups(runs)
    summary = []
    for allow in allow_values:
        for through in http_values:
            ok = [r for r in runs if r["allow_threads"] == allow
                  and r["import_through_http"] == through and r["status"] == "ok"]
            summary.append({"allow_threads": allow, "import_through_http": through,
                            "runs_ok": len(ok),
                            **{key: _values(ok, path) for key, path in SUMMARY_FIELDS.items()}})
    return summary
