"""Output of the benchmark: Markdown tables on stdout and a JSON file with everything."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from devkit.orthanc_server import OrthancServer

from .runner import RunResult, spread

MB = 1e6


def _proc_value(path: str, key: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.split(":")[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent.parent, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def orthanc_versions(script: Path | None = None) -> dict[str, Any]:
    """Versions from a throw-away server with both plugins loaded (errors are reported)."""
    config = {"PythonScript": str(script)} if script is not None else None
    server = OrthancServer("probe", dicomweb=True, config=config)
    try:
        server.start()
        system = server.get_json("/system")
        versions: dict[str, Any] = {"orthanc": system.get("Version"),
                                    "database_version": system.get("DatabaseVersion")}
        for plugin in server.get_json("/plugins"):
            if plugin.endswith(".js"):
                continue
            info = server.get(f"/plugins/{plugin}")
            if info.status_code == 200:
                versions[f"plugin_{plugin}"] = info.json().get("Version")
        return versions
    except Exception as e:
        return {"orthanc_versions_error": f"{type(e).__name__}: {e}"}
    finally:
        server.cleanup()


def machine_info(script: Path | None = None) -> dict[str, Any]:
    mem = _proc_value("/proc/meminfo", "MemTotal") or "0 kB"
    status = _git("status", "--porcelain", "plugin")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "memory_gb": round(int(mem.split()[0]) * 1024 / 1e9, 1),
        "cpu_model": _proc_value("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "plugin_dirty": bool(status) if status is not None else None,
        **orthanc_versions(script),
    }


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def _pair(a: float | None, b: float | None, digits: int = 0) -> str:
    return f"{_f(a, digits)} / {_f(b, digits)}"


def _note(r: RunResult) -> str:
    notes = []
    if r.status != "ok":
        notes.append(f"**{r.status}**: {(r.error or '').splitlines()[0][:160]}")
    if r.wire_source == "plugin payload metric":
        notes.append("wire = bucket payload bytes (plugin metric)")
    if r.cpu_other_s and r.seconds and r.cpu_other_s / r.seconds > 0.1:
        notes.append(f"other processes used {r.cpu_other_s / r.seconds:.2f} cores")
    if r.resets or (r.settings.get("link", {}).get("reset_rate") and r.status == "ok"):
        notes.append(f"{r.resets} of {r.connections} connections reset")
    encodings = (r.job.get("Content") or {}).get("Encodings")
    if isinstance(encodings, dict) and encodings:
        notes.append("buckets: " + ", ".join(
            f"{name} {counts.get('Buckets')}" for name, counts in encodings.items()))
    if r.runs_seconds and len(r.runs_seconds) > 1:
        notes.append(f"median of {len(r.runs_seconds)} ({spread(r)})")
    if r.failed_runs:
        notes.append(f"{r.failed_runs} failed run(s)")
    return "; ".join(notes)


def markdown_table(results: list[RunResult]) -> str:
    head = ("| profile | method | s | MB/s | wire MB | x vs peers-store | % link limit "
            "| peak RSS src/dst MB | CPU s/GB src/dst | notes |")
    lines = [head, "|" + "---|" * 10]
    for r in results:
        ok = r.status == "ok"
        wire = None if r.wire_bytes is None else r.wire_bytes / MB
        lines.append("| " + " | ".join([
            r.profile, r.method,
            _f(r.seconds, 2) if ok else r.status.upper(),
            _f(r.mb_s, 1),
            _f(wire, 1),
            _f(r.vs_peers_store, 2, "x"),
            _f(r.link_pct, 0, " %"),
            _pair(r.rss_peak_src_mb, r.rss_peak_dst_mb),
            _pair(r.cpu_src_s_per_gb, r.cpu_dst_s_per_gb, 1),
            _note(r),
        ]) + " |")
    return "\n".join(lines)


def _num(values: dict[str, object], key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) else None


def phases_table(results: list[RunResult]) -> str:
    """Where the time goes, for runs that crossed a proxy."""
    rows = [r for r in results if r.status == "ok" and r.phases]
    if not rows:
        return ""
    head = ("| profile | method | before 2 % s | bulk s | after 98 % s | link busy in bulk "
            "| CPU cores src/dst in bulk | CPU cores src/dst after | proxy CPU s |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        p = r.phases or {}

        lines.append("| " + " | ".join([
            r.profile, r.method,
            _f(_num(p, "before_s"), 2), _f(_num(p, "data_s"), 2), _f(_num(p, "after_s"), 2),
            _f(_num(p, "link_busy_pct"), 0, " %"),
            _pair(_num(p, "cpu_src_data_cores"), _num(p, "cpu_dst_data_cores"), 2),
            _pair(_num(p, "cpu_src_after_cores"), _num(p, "cpu_dst_after_cores"), 2),
            _f(r.cpu_bench_s, 1),
        ]) + " |")
    return "\n".join(lines)


def write_json(path: Path, *, machine: dict[str, Any], study: dict[str, Any],
               settings: dict[str, Any], results: list[RunResult],
               all_runs: list[RunResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "study": study, "settings": settings,
                "results": [asdict(r) for r in results],
                "runs": [asdict(r) for r in all_runs]}
    path.write_text(json.dumps(document, indent=2) + "\n")
