"""Probes and helpers of the load tests (imported by the tests as ``load_probes``).

Memory and threads are read from ``/proc/<pid>/status`` of the Orthanc processes (the
plugin runs inside them): :class:`RssSampler` samples ``VmRSS`` every 0.2 s on a
background thread; :func:`leak_problems` lists what finished transfers must not leave
behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterable
from typing import Any

from devkit.orthanc_server import OrthancServer, wait_for

TRANSFER_JOB_TYPES = frozenset({"PullTransfer", "PushTransfer", "PullTransferTracking"})
STAGING_KINDS = ("pull", "send", "push")
#: Threads an Orthanc may have more after the transfers than before them.
THREAD_SLACK = 4
MIB = 1024 * 1024

# -- /proc probes ---------------------------------------------------------------------


def pid_of(server: OrthancServer) -> int:
    assert server.process is not None, f"Orthanc {server.name} is not running"
    return server.process.pid


def proc_status(pid: int, key: str) -> int:
    """A numeric field of ``/proc/<pid>/status`` (``VmRSS`` in bytes, ``Threads`` as is)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                parts = line.split()
                value = int(parts[1])
                return value * 1024 if len(parts) > 2 and parts[2] == "kB" else value
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss(server: OrthancServer) -> int:
    return proc_status(pid_of(server), "VmRSS")


def threads(server: OrthancServer) -> int:
    return proc_status(pid_of(server), "Threads")


def mb(size: float) -> float:
    return round(size / MIB, 1)


class RssSampler:
    """Samples ``VmRSS`` of servers every ``interval`` s on a thread; peaks per window.

    ``window()`` starts a measurement: the baseline is the RSS at that moment and the
    peak the highest sample since (a final sample is taken when the peak is read).
    """

    def __init__(self, servers: Iterable[OrthancServer], interval: float = 0.2) -> None:
        self.servers = list(servers)
        self.interval = interval
        self.baseline: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.window()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        for server in self.servers:
            try:
                value = rss(server)
            except (OSError, KeyError, AssertionError):
                continue
            with self._lock:
                self._peak[server.name] = max(self._peak.get(server.name, 0), value)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def window(self) -> None:
        with self._lock:
            self.baseline = {s.name: rss(s) for s in self.servers}
            self._peak = dict(self.baseline)

    def peaks(self) -> dict[str, int]:
        self._sample()
        with self._lock:
            return dict(self._peak)

    def growth(self) -> dict[str, int]:
        """Peak minus baseline of the current window, by server name."""
        peaks = self.peaks()
        return {name: peaks[name] - self.baseline[name] for name in peaks}


# -- what a finished transfer must not leave behind --------------------------------------


def staging_leftovers(server: OrthancServer) -> list[str]:
    root = server.storage / "transfers-staging"
    found: list[str] = []
    for kind in STAGING_KINDS:
        folder = root / kind
        if folder.is_dir():
            found.extend(f"{kind}/{entry.name}" for entry in sorted(folder.iterdir()))
    return found


def unfinished_transfer_jobs(server: OrthancServer) -> list[str]:
    return [f"{job['Type']} {job['ID']} {job['State']}"
            for job in server.get_json("/jobs?expand")
            if job.get("Type") in TRANSFER_JOB_TYPES and job["State"] in ("Running", "Pending")]


def leak_problems(servers: Iterable[OrthancServer],
                  threads_before: dict[str, int]) -> tuple[list[str], dict[str, int]]:
    """What the transfers left behind on each server; and the thread counts after them.

    Runner and worker threads exit just after a job's state changes: the thread count is
    given a few seconds to settle before it is judged.
    """
    problems: list[str] = []
    after: dict[str, int] = {}
    for server in servers:
        name = server.name
        jobs = unfinished_transfer_jobs(server)
        if jobs:
            problems.append(f"{name}: transfer jobs still running or pending: {jobs}")
        active = server.metric("orthanc_transfers_active_push_count")
        if active != 0:
            problems.append(f"{name}: orthanc_transfers_active_push_count is {active}, not 0")
        leftovers = staging_leftovers(server)
        if leftovers:
            problems.append(f"{name}: staging leftovers in {server.storage}/transfers-staging:"
                            f" {leftovers}")
        limit = threads_before[name] + THREAD_SLACK

        def settled(server: OrthancServer = server, limit: int = limit) -> int | None:
            count = threads(server)
            return count if count <= limit else None

        try:
            after[name] = wait_for(settled, 15, f"{name} threads <= {limit}", interval=0.25)
        except AssertionError:
            after[name] = threads(server)
            problems.append(f"{name}: {after[name]} threads after the transfers, "
                            f"{threads_before[name]} before (allowed +{THREAD_SLACK})")
    return problems, after


# -- loading data -------------------------------------------------------------------------


def upload_zip(server: OrthancServer, files: list[bytes], timeout: float = 300) -> list[str]:
    """Store DICOM files with one ``POST /instances`` of a ZIP archive; their instance IDs.

    Orthanc 1.10 answers a list with one entry per file; every one must be a new instance.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for n, data in enumerate(files):
            archive.writestr(f"{n:06d}.dcm", data)
    response = server.post("/instances", data=buffer.getvalue(), timeout=timeout,
                           headers={"Content-Type": "application/zip"})
    response.raise_for_status()
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == len(files), str(answers)[:500]
    statuses = {a.get("Status") for a in answers}
    assert statuses == {"Success"}, f"not all stored as new instances: {statuses}"
    return [str(a["ID"]) for a in answers]


def follow_job(server: OrthancServer, job_id: str,
               timeout: float) -> tuple[dict[str, Any], dict[str, float]]:
    """Wait for a job to end, noting how long it spent in each ``Content.Phase``."""
    phases: dict[str, float] = {}
    current, since = "", time.monotonic()

    def finished() -> dict[str, Any] | None:
        nonlocal current, since
        job: dict[str, Any] = server.get_json(f"/jobs/{job_id}")
        phase = str(job.get("Content", {}).get("Phase", ""))
        now = time.monotonic()
        if phase != current:
            if current:
                phases[current] = phases.get(current, 0.0) + now - since
            current, since = phase, now
        return job if job["State"] in ("Success", "Failure") else None

    job: dict[str, Any] = wait_for(finished, timeout, f"job {job_id} to finish", interval=0.25)
    return job, {phase: round(seconds, 1) for phase, seconds in phases.items()}


def study_of(server: OrthancServer, instance_id: str) -> str:
    study: str = server.get_json(f"/instances/{instance_id}/study")["ID"]
    return study


def file_md5(server: OrthancServer, instance_id: str, chunk: int = 8 * MIB) -> str:
    """MD5 of the bytes Orthanc serves for an instance, streamed (instances up to GiBs)."""
    digest = hashlib.md5()
    with server.session.get(f"{server.url}/instances/{instance_id}/file", stream=True,
                            timeout=600) as response:
        response.raise_for_status()
        for block in response.iter_content(chunk):
            digest.update(block)
    return digest.hexdigest()


def lookup(server: OrthancServer, level: str, resource_id: str) -> dict[str, tuple[int, str]]:
    """``POST /transfers/lookup``: every instance's (size, MD5) as Orthanc stores them."""
    response = server.post("/transfers/lookup", json=[{"Level": level, "ID": resource_id}],
                           timeout=600)
    response.raise_for_status()
    return {item["ID"]: (int(item["Size"]), item["MD5"])
            for item in response.json()["Instances"]}


def report(figures: dict[str, Any], test: str, values: dict[str, Any]) -> None:
    """Record a test's figures and print them (visible with ``pytest -s``)."""
    figures[test] = values
    print(f"\n[load] {test}: {json.dumps(values, indent=1)}")
