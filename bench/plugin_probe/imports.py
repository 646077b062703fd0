"""Import throughput of a pull transfer, and route latency meanwhile (part ``imports``).

A pull transfer (``Compression`` none) of ``--instances`` generated CT instances from a
source to a fresh target, for each (``AllowThreads``, ``ImportThroughHttp``) pair,
``CommitThreadsCount`` ``--commit-threads``, ``--repeat`` times, the configurations
interleaved. Timed: request to ``Success``; the import as the interval between the first
and the last instance counted by the core route ``/statistics`` (polled every 25 ms,
independent of the GIL); the job's ``Phase`` ``Import`` to ``Success`` (polled every 50 ms
on the Python route ``/jobs/<id>``). Meanwhile a :class:`.watchers.Prober` times the
Python route ``GET /plugins/transfers`` and the core route ``GET /system`` alternately,
30 ms apart; latencies are reported for the idle second before the request and for the
import window. CPU of the target during the import, and the CPU used by other processes of
the machine during the run, are recorded too. :mod:`.import_figures` turns what was seen
into these figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from pydicom.uid import generate_uid

from bench import measure
from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, WaitTimeout, resources, wait_for

from .import_figures import PullObservation, latencies, summarize_imports, timings
from .report import fmt
from .servers import Anomalies, Workspace, log, running, start_server, stop_server
from .versions import plugin_settings
from .watchers import CpuReading, Poller, Prober

#: The plugin's warning when ImportThroughHttp cannot be used.
HTTP_FALLBACK_LOG = "using RestApiPost instead"

#: Other processes may use this many cores when a run starts (``--quiet-wait``).
QUIET_CORES = 0.3

PATIENT_ID = "TF-PROBE-0001"


@dataclass(frozen=True)
class ImportConfig:
    """What every run of one :func:`imports` shares."""

    commit_threads: int
    quiet_wait: float
    timeout: float


def probe_study(instances: int, multiframe_mb: float) -> list[bytes]:
    """Deterministic CT slices (and one multi-frame instance) in one study. Not
    :func:`bench.study.build_study`: that one cuts multi-frame data into instances of at
    most 30 MiB and spends a zlib pass on the ratio; these bytes stay those of earlier
    results."""
    log(f"generating {instances} CT instances" +
        (f" and a {multiframe_mb} MiB multi-frame instance" if multiframe_mb else ""))
    study_uid = str(generate_uid(entropy_srcs=["tf-plugin-probe study", str(instances)]))
    files = dicom_data.ct_series(instances, seed=7, patient_id=PATIENT_ID,
                                 study_uid=study_uid)
    if multiframe_mb:
        files.append(dicom_data.multiframe_instance(multiframe_mb, seed=7,
                                                    patient_id=PATIENT_ID,
                                                    study_uid=study_uid))
    return files


def imports(ws: Workspace, anomalies: Anomalies, *, allow_values: list[bool | None],
            http_values: list[bool], instances: int, multiframe_mb: float, repeat: int,
            commit_threads: int, quiet_wait: float, timeout: float) -> dict[str, Any]:
    """Every (AllowThreads, ImportThroughHttp) pair ``repeat`` times, interleaved; one
    source per AllowThreads value, a fresh target per run."""
    files = probe_study(instances, multiframe_mb)
    config = ImportConfig(commit_threads, quiet_wait, timeout)
    sources: dict[bool | None, OrthancServer] = {}
    runs: list[dict[str, Any]] = []
    try:
        for allow in allow_values:
            sources[allow] = start_server(f"source{len(sources)}", ws.plugin_script,
                                          allow_threads=allow)
            log(f"uploading the study to the source (AllowThreads={allow})")
            sources[allow].upload(files)
        study_id = sources[allow_values[0]].get_json("/studies")[0]
        for rep in range(1, repeat + 1):
            for allow in allow_values:
                for through in http_values:
                    runs.append(_guarded_run(ws, anomalies, sources[allow], study_id,
                                             len(files), config, allow, through, rep))
    finally:
        for allow, source in sources.items():
            stop_server(source, anomalies, f"import source AllowThreads={allow}")
    return {"instances": len(files), "multiframe_mb": multiframe_mb,
            "study_bytes": sum(len(f) for f in files),
            "largest_instance_bytes": max(len(f) for f in files), "runs": runs,
            "summary": summarize_imports(runs, allow_values, http_values)}


def _guarded_run(ws: Workspace, anomalies: Anomalies, source: OrthancServer, study_id: str,
                 instances: int, config: ImportConfig, allow: bool | None, through: bool,
                 rep: int) -> dict[str, Any]:
    """:func:`import_run`, a failure recorded as an anomaly and an ``error`` run."""
    try:
        return import_run(ws, anomalies, source, study_id, instances, config,
                          allow_threads=allow, through_http=through, repetition=rep)
    except Exception as e:
        anomalies.add(f"import AllowThreads={allow} http={through} rep {rep}",
                      f"{type(e).__name__}: {e}")
        return {"allow_threads": allow, "import_through_http": through,
                "repetition": rep, "status": f"error: {e}"}


def import_run(ws: Workspace, anomalies: Anomalies, source: OrthancServer, study_id: str,
               instances: int, config: ImportConfig, *, allow_threads: bool | None,
               through_http: bool, repetition: int) -> dict[str, Any]:
    """One pull of the study by a fresh target, watched; the run's figures."""
    label = f"AllowThreads={allow_threads} ImportThroughHttp={through_http} rep {repetition}"
    where = f"import {label}"
    result: dict[str, Any] = {"allow_threads": allow_threads, "import_through_http": through_http,
                              "commit_threads": config.commit_threads,
                              "repetition": repetition, "status": "ok"}
    waited, others = measure.wait_until_quiet(config.quiet_wait, threshold=QUIET_CORES)
    result["quiet_wait_s"] = round(waited, 1)
    result["other_cores_before"] = round(others, 2)
    transfers = {"ImportThroughHttp": through_http, "CommitThreadsCount": config.commit_threads}
    peers = {"source": {"Url": source.url + "/"}}
    with running("target", ws.plugin_script, anomalies, where, allow_threads=allow_threads,
                 transfers=transfers, peers=peers) as target:
        settings = plugin_settings(target) or {}
        result["plugin_settings"] = {k: settings.get(k) for k in
                                     ("ImportThroughHttp", "CommitThreadsCount", "Threads")}
        seen = observe_pull(target, source, study_id, config.timeout)
        if seen.timed_out:
            result["status"] = seen.timed_out
        _check_outcome(target, seen, instances, where, anomalies, result)
        result.update(timings(seen, instances))
        result["latency"] = latencies(seen, instances)
        failed = seen.prober.failures()
        if failed:
            anomalies.add(where, f"{len(failed)} probe request(s) failed: {failed[:3]}")
    log(f"import {label}: total {fmt(result.get('total_s'))} s, import "
        f"{fmt(result.get('import_stored_window_s'))} s "
        f"({fmt(result.get('import_instances_per_s'), 0)} inst/s), python route p95 "
        f"{result['latency']['python_import']['p95_ms']} ms, "
        f"other cores {result['other_cores_during']}")
    return result


def observe_pull(target: OrthancServer, source: OrthancServer, study_id: str,
                 timeout: float) -> PullObservation:
    """Start the pull on ``target`` with the watchers running, wait for its end."""
    assert target.process is not None and source.process is not None
    pids = target.process.pid, source.process.pid
    with requests.Session() as stats_session, requests.Session() as job_session:

        def count() -> tuple[int, float]:
            answer = stats_session.get(target.url + "/statistics", timeout=60).json()
            return int(answer["CountInstances"]), measure.cpu_seconds(pids[0])

        prober, stats = Prober(target.url), Poller(count, 0.025)
        prober.start()
        stats.start()
        try:
            return _pull(target, study_id, timeout, job_session, prober, stats, pids)
        finally:
            stats.stop()
            prober.stop()


def _pull(target: OrthancServer, study_id: str, timeout: float, job_session: requests.Session,
          prober: Prober, stats: Poller, pids: tuple[int, int]) -> PullObservation:
    time.sleep(1.0)                               # idle baseline of the prober
    cpu_before = CpuReading.take(*pids)
    t_request = time.perf_counter()
    answer = target.post("/transfers/pull", json={
        "Resources": resources("Study", study_id), "Peer": "source", "Compression": "none"})
    answer.raise_for_status()
    job_id = answer.json()["ID"]

    def job() -> dict[str, Any]:
        value: dict[str, Any] = job_session.get(f"{target.url}/jobs/{job_id}",
                                                timeout=60).json()
        return value

    jobs = Poller(job, 0.05)
    jobs.start()
    timed_out = _wait_job_end(jobs, job_id, timeout)
    # Success is seen by the poller up to one interval late: stop right after.
    jobs.stop()
    stats.stop()
    t_end_poll = time.perf_counter()
    cpu = CpuReading.take(*pids) - cpu_before
    prober.stop()
    return PullObservation(job_id, t_request, t_end_poll, jobs.samples, stats.samples,
                           prober, cpu, timed_out)


def _wait_job_end(jobs: Poller, job_id: str, timeout: float) -> str | None:
    """None once the poller saw the job end; the status of the run on a timeout."""
    def ended() -> bool:
        last = jobs.samples[-1][1] if jobs.samples else None
        return isinstance(last, dict) and last.get("State") in ("Success", "Failure")

    try:
        wait_for(ended, timeout, f"pull job {job_id}", interval=0.05)
    except WaitTimeout as e:
        return f"timeout: {e}"
    return None


def _check_outcome(target: OrthancServer, seen: PullObservation, instances: int, where: str,
                   anomalies: Anomalies, result: dict[str, Any]) -> None:
    """Job state, stored count, the ImportThroughHttp fallback: into ``result``'s status
    and the anomalies."""
    final = seen.jobs[-1][1] if seen.jobs else None
    if not isinstance(final, dict) or final.get("State") != "Success":
        result["status"] = f"job ended {final!r}"[:500]
        anomalies.add(where, "the pull job did not succeed", target.log_tail(30))
    stored = target.get_json("/statistics")["CountInstances"]
    result["stored_instances"] = stored
    if stored != instances:
        result["status"] = f"{stored} of {instances} instances stored"
        anomalies.add(where, result["status"], target.log_tail(30))
    if HTTP_FALLBACK_LOG in target.log_tail(100000):
        anomalies.add(where, "ImportThroughHttp fell back to RestApiPost", target.log_tail(20))
