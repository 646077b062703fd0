"""One measured transfer on a fresh pair of servers, and the median of several.

Each run starts its own source and target (so the target is empty and each server's
memory and CPU figures belong to this transfer only), uploads the study to the source,
resets the peak-RSS counters, starts the method, waits for its job, then checks that the
target holds byte-identical copies. Any error becomes a failed result, never an exception.
"""

from __future__ import annotations

import statistics
import traceback
from dataclasses import dataclass, field
from typing import Any

from devkit.wan_proxy import LinkProfile

from . import measure
from .methods import Method, Unavailable, wait_job
from .snapshot import PluginSnapshot
from .study import Study
from .topology import Pair, start_pair

#: Below this, a LAN transfer is assumed to take at least study bytes / 20 MB/s.
LAN_FLOOR_BYTES_PER_S = 20e6


@dataclass
class RunResult:
    profile: str
    method: str
    study_bytes: int
    instances: int
    settings: dict[str, Any] = field(default_factory=dict)
    status: str = "failed"                  # ok | failed | n/a
    error: str | None = None
    seconds: float | None = None
    mb_s: float | None = None
    wire_bytes: int | None = None
    wire_source: str | None = None          # proxy | plugin payload metric
    link_limit_s: float | None = None
    link_pct: float | None = None
    vs_peers_store: float | None = None
    rss_base_src_mb: float | None = None
    rss_base_dst_mb: float | None = None
    rss_peak_src_mb: float | None = None
    rss_peak_dst_mb: float | None = None
    cpu_src_s: float | None = None
    cpu_dst_s: float | None = None
    cpu_bench_s: float | None = None        # this process: the proxies, sampler, polling
    cpu_other_s: float | None = None        # every other process of the machine
    cpu_src_s_per_gb: float | None = None
    cpu_dst_s_per_gb: float | None = None
    resets: int = 0                         # connections the proxies reset (flaky)
    connections: int = 0                    # TCP connections through the proxies
    verified: bool | None = None
    phases: dict[str, object] | None = None
    job: dict[str, Any] = field(default_factory=dict)
    runs_seconds: list[float] = field(default_factory=list)
    failed_runs: int = 0
    quiet_wait_s: float | None = None       # waited for other processes before the run
    other_cores_before: float | None = None
    log_tail: str | None = None


def _timeout(study: Study, profile: LinkProfile) -> float:
    rate = profile.bandwidth / 8 if profile.bandwidth else LAN_FLOOR_BYTES_PER_S
    return 120 + 10 * study.size / rate


def _study_id(pair: Pair, study: Study) -> str:
    ids = pair.source.upload(study.files)
    if len(set(ids)) != len(study.files):
        raise RuntimeError(f"uploaded {len(study.files)} files, got {len(set(ids))} instances")
    studies = {pair.source.get_json(f"/instances/{i}/study")["ID"] for i in (ids[0], ids[-1])}
    if len(studies) != 1:
        raise RuntimeError("the benchmark files do not form one study")
    return str(studies.pop())


def _measure(pair: Pair, method: Method, study: Study, result: RunResult) -> None:
    study_id = _study_id(pair, study)
    pids = pair.pids()
    servers = {"src": pair.source, "dst": pair.target}
    for role, pid in pids.items():
        if not measure.reset_peak_rss(pid):
            result.settings["peak_rss"] = "since server start (clear_refs refused)"
        setattr(result, f"rss_base_{role}_mb", round(measure.rss_mb(pid), 1))
    metric0 = 0.0
    if method.payload_metric is not None:
        metric0 = servers[method.payload_metric[0]].metric(method.payload_metric[1])
    sampler = measure.Sampler(measure.clocks(pids), pair.wire_bytes)
    sampler.start()
    try:
        started = method.start(pair, study_id)
        job = wait_job(started.server, started.job_id, _timeout(study, pair.profile))
    finally:
        samples = sampler.stop()
    result.job = {k: job.get(k) for k in ("Type", "State", "EffectiveRuntime", "ErrorDescription",
                                          "ErrorDetails", "Content")}
    for role, pid in pids.items():
        setattr(result, f"rss_peak_{role}_mb", round(measure.peak_rss_mb(pid), 1))
    if job["State"] != "Success":
        raise RuntimeError(f"job {job['State']}: {job.get('ErrorDescription')} "
                           f"{job.get('ErrorDetails') or ''}".strip())
    _figures(result, samples, study, pair)
    if result.wire_bytes is None and method.payload_metric is not None:
        side, name = method.payload_metric
        result.wire_bytes = int(servers[side].metric(name) - metric0)
        result.wire_source = "plugin payload metric"
    result.verified = _verify(pair)
    if not result.verified:
        raise RuntimeError("the target's copies are not byte-identical to the source's")
    result.status = "ok"


def _figures(result: RunResult, samples: list[measure.Sample], study: Study, pair: Pair) -> None:
    """Time, throughput, CPU, wire bytes and phases of a successful transfer."""
    seconds = samples[-1].t
    cpu = samples[-1].cpu
    gigabytes = study.size / 1e9
    result.seconds = round(seconds, 3)
    result.mb_s = round(study.size / 1e6 / seconds, 2)
    result.cpu_src_s, result.cpu_dst_s = round(cpu["src"], 2), round(cpu["dst"], 2)
    result.cpu_bench_s = round(cpu["bench"], 2)
    others = cpu["machine"] - cpu["src"] - cpu["dst"] - cpu["bench"]
    result.cpu_other_s = round(max(0.0, others), 2)
    result.cpu_src_s_per_gb = round(cpu["src"] / gigabytes, 1)
    result.cpu_dst_s_per_gb = round(cpu["dst"] / gigabytes, 1)
    result.resets, result.connections = pair.resets(), pair.connections()
    wire = samples[-1].wire
    if wire is not None:
        result.wire_bytes, result.wire_source = wire, "proxy"
        profile = pair.profile
        if profile.bandwidth:
            result.link_limit_s = round(wire * 8 / profile.bandwidth + 2 * profile.delay, 3)
            result.link_pct = round(100 * result.link_limit_s / seconds, 1)
        result.phases = measure.phases(samples, seconds, profile.bandwidth)


def _verify(pair: Pair) -> bool:
    return pair.source.instance_md5s() == pair.target.instance_md5s()


def run_once(profile: LinkProfile, method: Method, study: Study, *,
             transfers: dict[str, Any] | None = None, plugin: PluginSnapshot | None = None,
             max_quiet_wait: float = 0.0) -> RunResult:
    """``transfers``: our options on both servers; ``plugin``: the copy of the plugin to
    load (default: the live ``plugin/`` directory); ``max_quiet_wait``: first wait up to
    that long for other processes to calm down."""
    settings: dict[str, Any] = {
        "transfers": dict(transfers or {}),
        "link": {"delay_s": profile.delay, "bandwidth_bps": profile.bandwidth,
                 "reset_rate": profile.reset_rate}}
    if plugin is not None:
        settings["plugin_origin"] = plugin.origin
        settings["plugin_fingerprint"] = plugin.fingerprint
    result = RunResult(profile.name, method.name, study.size, len(study.files), settings)
    if max_quiet_wait > 0:
        waited, cores = measure.wait_until_quiet(max_quiet_wait)
        result.quiet_wait_s, result.other_cores_before = round(waited, 1), round(cores, 2)
    pair: Pair | None = None
    try:
        pair = start_pair(profile, transfers=transfers,
                          script=plugin.script if plugin is not None else None)
        settings["plugin"] = pair.plugin_settings()
        _measure(pair, method, study, result)
    except Unavailable as e:
        result.status, result.error = "n/a", str(e)
    except Exception as e:
        result.status, result.error = "failed", f"{type(e).__name__}: {e}"
        if pair is not None:
            result.log_tail = "\n".join(
                f"[{s.name}] {line}" for s in (pair.source, pair.target)
                for line in s.log_tail(15).splitlines())
        if not isinstance(e, RuntimeError):
            result.log_tail = (result.log_tail or "") + "\n" + traceback.format_exc()
    finally:
        if pair is not None:
            pair.close()
    return result


def median_run(runs: list[RunResult]) -> RunResult:
    """The run whose time is the (lower) median of the successful runs."""
    ok = sorted((r for r in runs if r.status == "ok"), key=lambda r: r.seconds or 0.0)
    if not ok:
        return runs[-1]
    chosen = ok[(len(ok) - 1) // 2]
    chosen.runs_seconds = [r.seconds for r in ok if r.seconds is not None]
    chosen.failed_runs = len(runs) - len(ok)
    return chosen


def compare_to_peers_store(results: list[RunResult]) -> None:
    """Fill ``vs_peers_store`` = time of /peers/store / time of the method, per profile."""
    baseline = {r.profile: r.seconds for r in results
                if r.method == "peers-store" and r.status == "ok"}
    for r in results:
        base = baseline.get(r.profile)
        if base and r.seconds:
            r.vs_peers_store = round(base / r.seconds, 2)


def spread(result: RunResult) -> str:
    """``min-max`` of the repeated times, or an empty string."""
    if len(result.runs_seconds) < 2:
        return ""
    return f"{min(result.runs_seconds):.1f}-{max(result.runs_seconds):.1f} s, " \
           f"stdev {statistics.pstdev(result.runs_seconds):.2f}"
