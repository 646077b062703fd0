"""Output of the probe: Markdown tables on stdout and the JSON document with everything.

One section per part (``gil``, ``memory``, ``imports``), each read from the document as
written to JSON, so a table can be printed again from a stored file.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

MB = 1e6


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def spread(values: list[float], digits: int = 2) -> str:
    """``median (min-max)`` of the repetitions."""
    if not values:
        return "-"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _gil_section(document: dict[str, Any]) -> list[str]:
    rows = [[g["config"], fmt(g.get("slow_call_s")), fmt(g.get("first_ping_ms"), 1),
             fmt(g.get("max_ping_ms"), 1), "yes" if g.get("gil_released_during_sdk_calls")
             else "no"] for g in document["gil_check"]]
    return ["### GIL during an SDK call (orthanc.HttpGet of a "
            f"{document['settings']['gil_sleep']} s URL)", "",
            table(["configuration", "slow call s", "first ping ms", "max ping ms",
                   "GIL released"], rows), ""]


def _memory_section(document: dict[str, Any]) -> list[str]:
    settings = document["settings"]
    rows = []
    for m in document["memory"]:
        for b in m["batches"]:
            rows.append([m["target"], str(b["batch"]), str(m["puts_per_batch"]),
                         ",".join(f"{k}x{v}" for k, v in b["statuses"].items()),
                         fmt(b["rss_before_mb"], 0), fmt(b["rss_after_mb"], 0),
                         fmt(b["rss_settled_mb"], 0), fmt(b["growth_per_put_mb"], 2),
                         fmt(b["slope_per_put_mb"], 2), fmt(b["slope_per_body"], 2)])
    return [f"### RSS of Orthanc per request body ({settings['put_mib']} MiB "
            "bodies, sequential)", "",
            table(["route", "batch", "requests", "statuses", "RSS before MB",
                   "RSS after MB", f"after {settings['settle']} s idle MB",
                   "MB per request", "slope MB/request", "slope x body"], rows), ""]


def _configuration(s: dict[str, Any]) -> list[str]:
    """The AllowThreads and ImportThroughHttp cells of a summary row."""
    allow = fmt(s["allow_threads"]) if s["allow_threads"] is not None else "n/a"
    return [allow, str(s["import_through_http"])]


def _import_times_table(summary: list[dict[str, Any]]) -> str:
    rows = [[*_configuration(s), str(s["runs_ok"]), spread(s["total_s"]),
             spread(s["import_s"]), spread(s["import_phase_s"]),
             spread(s["instances_per_s"], 0), spread(s["import_speedup_vs_ref"]),
             spread(s["target_cores"]), spread(s["other_cores"])] for s in summary]
    return table(["AllowThreads", "ImportThroughHttp", "runs", "total s",
                  "import s (1st→last stored)", "Import phase s", "inst/s",
                  "import speed-up vs row 1, paired", "target cores in import",
                  "other cores"], rows)


def _import_latency_table(summary: list[dict[str, Any]]) -> str:
    rows = [[*_configuration(s), spread(s["python_idle_median_ms"], 1),
             spread(s["python_import_median_ms"], 1), spread(s["python_import_p95_ms"], 1),
             spread(s["python_import_max_ms"], 0), spread(s["core_import_median_ms"], 1),
             spread(s["core_import_p95_ms"], 1)] for s in summary]
    return table(["AllowThreads", "ImportThroughHttp", "python idle median",
                  "python median", "python p95", "python max", "core median",
                  "core p95"], rows)


def _imports_section(document: dict[str, Any]) -> list[str]:
    im, settings = document["imports"], document["settings"]
    extra = (f" including one {im['multiframe_mb']:g} MiB multi-frame"
             if im.get("multiframe_mb") else "")
    return [f"### Pull of {im['instances']} instances{extra} "
            f"({im['study_bytes'] / MB:.0f} MB), CommitThreadsCount "
            f"{settings['commit_threads']}: median (min-max) of {settings['repeat']}", "",
            _import_times_table(im["summary"]), "",
            "Latency of `GET /plugins/transfers` (Python route) and `GET /system` (core) "
            "during the import, ms:", "",
            _import_latency_table(im["summary"]), ""]


def markdown(document: dict[str, Any]) -> str:
    p = document["platform"]
    out = [f"## {p['os']}: Orthanc {p['orthanc_version']}, Python plugin "
           f"{p['python_plugin_version']}, embedded Python {p['embedded_python_version']}",
           ""]
    if document.get("gil_check"):
        out += _gil_section(document)
    if document.get("memory"):
        out += _memory_section(document)
    if document.get("imports"):
        out += _imports_section(document)
    if document.get("anomalies"):
        out += ["### Anomalies", ""]
        out += [f"* {a['where']}: {a['what']}" for a in document["anomalies"]]
        out.append("")
    return "\n".join(out)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
