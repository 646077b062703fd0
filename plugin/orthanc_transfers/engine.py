"""The registry and scheduler of transfer jobs.

Jobs run on their own runner threads, at most ``ConcurrentJobs`` at once, pending jobs
by decreasing ``Priority`` then submission order. A job that waits for an unreachable
peer (:meth:`_Runner.waiting`) gives its slot to the next pending job meanwhile, and takes
one back before it goes on, ahead of the pending jobs. Each job is saved as a small JSON
file under ``<staging>/jobs`` at every state change (and at most every second while it
runs), so the list survives a restart; jobs that were running when Orthanc stopped run
again at the next start and continue from their staging manifest.

Stopping (``ORTHANC_STOPPED``, ``/tools/reset``) interrupts every runner and joins it
before Orthanc finalizes Python: a thread still inside ``orthanc.*`` at that moment
would crash Orthanc (python-plugin-notes §3).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .concurrency import Background
from .errors import (
    ORTHANC_CANCELED_JOB,
    Cancelled,
    Interrupted,
    Paused,
    StopSignal,
    TransfersError,
    UnknownResource,
)
from .jobs import FINISHED, JobEvent, JobRecord, JobState, Work

#: Builds the work of a job from its type, its request and its ID (also after a restart).
WorkFactory = Callable[[str, dict[str, Any], str], Work]
#: How long ``stop()`` waits for runners before giving up on them.
STOP_TIMEOUT = 20.0
#: Running jobs are saved at most this often (seconds).
SAVE_INTERVAL = 1.0
#: How often a job that waited for a peer looks for a free slot (seconds).
RECLAIM_INTERVAL = 0.5


class JobStore:
    """One JSON file per job, written atomically (write, then rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, job: JobRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{job.id}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(job.to_saved()))
        os.replace(temporary, path)

    def delete(self, job_id: str) -> None:
        (self.directory / f"{job_id}.json").unlink(missing_ok=True)

    def load_all(self) -> list[JobRecord]:
        jobs = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                jobs.append(JobRecord.from_saved(json.loads(path.read_text())))
            except (ValueError, KeyError, OSError):
                path.rename(path.with_suffix(".corrupt"))
        return jobs


class _Runner:
    """What a running job's work sees of the engine (implements ``RunContext``)."""

    def __init__(self, engine: JobEngine, job: JobRecord) -> None:
        self.engine = engine
        self.job = job
        self.job_id = job.id
        self.stop_event = threading.Event()
        self.stop_reason: type[StopSignal] = Paused
        self.thread = Background(lambda: engine._run(self), f"TF-JOB-{job.id[:8]}")
        self._last_save = 0.0

    def request_stop(self, reason: type[StopSignal]) -> None:
        self.stop_reason = reason
        self.stop_event.set()

    def check(self) -> None:
        if self.stop_event.is_set():
            raise self.stop_reason(f"job {self.stop_reason.__name__.lower()}")

    def wait(self, seconds: float) -> None:
        self.stop_event.wait(seconds)
        self.check()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self.engine._release_slot(self)
        yield
        # Not on an error or a stop: a job that ends needs no slot to end.
        self.engine._reclaim_slot(self)

    def changed(self) -> None:
        now = time.monotonic()
        if now - self._last_save >= SAVE_INTERVAL:
            self._last_save = now
            self.engine._save(self.job)


class JobEngine:
    def __init__(self, store: JobStore, factory: WorkFactory, *, concurrent_jobs: int,
                 history_size: int, log_error: Callable[[str], None]) -> None:
        self._store = store
        self._factory = factory
        self._concurrent = concurrent_jobs
        self._history = history_size
        self._log_error = log_error
        self._jobs: dict[str, JobRecord] = {}
        self._runners: dict[str, _Runner] = {}
        self._idle: set[str] = set()          # runners waiting for a peer: no slot
        self._reclaiming: set[str] = set()    # idle ones that want their slot back
        self._lock = threading.RLock()
        self._sequence = 0
        self._stopping = False
        self._loaded = False
        #: Notifications (pynetdicom's kind): called after the engine's lock is released,
        #: each one contained, so that a listener can neither block nor break the engine.
        self.listeners: list[Callable[[JobRecord, JobEvent], None]] = []
        self._events: list[tuple[JobRecord, JobEvent]] = []   # under _lock, until notified
        self._notifying = threading.RLock()     # notifications go out one batch at a time

    # -- lifecycle --------------------------------------------------------------------

    def load(self) -> None:
        """Reload saved jobs, so that they are listed at once; they run from ``start``.

        Orthanc answers HTTP before it reports itself started: loading early means that
        no ``GET /jobs/{id}`` of a saved job meets a 404 in between.
        """
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for job in self._store.load_all():
                if job.state is JobState.RUNNING:
                    job.state = JobState.PENDING
                self._attach(job)
                self._jobs[job.id] = job
                self._sequence = max(self._sequence, job.sequence)

    def start(self) -> None:
        """Run again the jobs that were running or pending (Orthanc has started)."""
        with self._lock:
            self.load()
            self._stopping = False
            self._schedule()
        self._notify()

    def stop(self) -> None:
        """Interrupt every runner and wait for them (Orthanc is stopping)."""
        with self._lock:
            self._stopping = True
            runners = list(self._runners.values())
            for runner in runners:
                runner.request_stop(Interrupted)
                self._apply(runner.job, JobEvent.INTERRUPT)
        self._notify()
        deadline = time.monotonic() + STOP_TIMEOUT
        for runner in runners:
            runner.thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for job in self._jobs.values():
                self._save(job)

    # -- queries ----------------------------------------------------------------------

    def submit(self, job_type: str, request: dict[str, Any], priority: int = 0) -> JobRecord:
        with self._lock:
            self._sequence += 1
            job = JobRecord(id=str(uuid.uuid4()), type=job_type, request=request,
                            priority=priority, sequence=self._sequence)
            self._attach(job)
            self._jobs[job.id] = job
            self._save(job)
            self._schedule()
        self._notify()
        return job

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownResource(f"Unknown job: {job_id}")
        return job

    def has(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._jobs

    def jobs(self) -> list[JobRecord]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.sequence)

    # -- actions (POST /jobs/{id}/...) ------------------------------------------------

    def act(self, job_id: str, event: JobEvent) -> None:
        with self._lock:
            job = self.get(job_id)
            before = job.state
            after = self._apply(job, event)
            if event is JobEvent.CANCEL and after is JobState.FAILURE and before is not after:
                job.error_code, job.error_description = ORTHANC_CANCELED_JOB, "Job was canceled"
                job.error_details = "Canceled by a user; resubmit to continue"
            if event is JobEvent.RESUBMIT:
                job.error_code, job.error_description, job.error_details = 0, "Success", ""
            runner = self._runners.get(job_id)
            if runner is not None and after in (JobState.PAUSED, JobState.FAILURE):
                runner.request_stop(Paused if after is JobState.PAUSED else Cancelled)
            self._save(job)
            self._schedule()
        self._notify()

    # -- internals --------------------------------------------------------------------

    def _attach(self, job: JobRecord) -> None:
        job.work = self._factory(job.type, job.request, job.id)

    def _busy_slots(self) -> int:
        return len(self._runners) - len(self._idle)

    def _schedule(self) -> None:
        if self._stopping:
            return
        pending = sorted((j for j in self._jobs.values()
                          if j.state is JobState.PENDING and j.id not in self._runners),
                         key=lambda j: (-j.priority, j.sequence))
        free = self._concurrent - self._busy_slots() - len(self._reclaiming)
        for job in pending[: max(0, free)]:
            self._apply(job, JobEvent.START)
            runner = _Runner(self, job)
            self._runners[job.id] = runner
            self._save(job)
            runner.thread.start()
        self._trim_history()

    def _run(self, runner: _Runner) -> None:
        job = runner.job
        assert job.work is not None
        failure: TransfersError | None = None
        try:
            job.work.run(runner)
            event = JobEvent.SUCCEED
        except StopSignal:
            event = None     # the state was already changed by whoever stopped us
        except TransfersError as e:
            failure, event = e, JobEvent.FAIL
        except Exception as e:
            self._log_error(f"Transfers: job {job.id} crashed: {traceback.format_exc()}")
            failure = TransfersError("Internal error in the transfers plugin",
                                     f"{type(e).__name__}: {e}")
            event = JobEvent.FAIL
        with self._lock:
            del self._runners[job.id]
            self._idle.discard(job.id)
            self._reclaiming.discard(job.id)
            if event is not None and job.state is JobState.RUNNING:
                if failure is not None:
                    job.error_code = failure.orthanc_code
                    job.error_description = failure.message
                    job.error_details = failure.details or failure.message
                self._apply(job, event)
            self._save(job)
            self._schedule()
        self._notify()

    def _release_slot(self, runner: _Runner) -> None:
        with self._lock:
            self._idle.add(runner.job_id)
            self._schedule()
        self._notify()

    def _reclaim_slot(self, runner: _Runner) -> None:
        """Back from waiting: take a slot as soon as one frees (before pending jobs).
        A stop meanwhile raises from ``runner.wait``; ``_run`` then clears the sets."""
        with self._lock:
            self._reclaiming.add(runner.job_id)
        while True:
            with self._lock:
                if self._busy_slots() < self._concurrent or self._stopping:
                    self._idle.discard(runner.job_id)
                    self._reclaiming.discard(runner.job_id)
                    return
            runner.wait(RECLAIM_INTERVAL)

    def _trim_history(self) -> None:
        # A job whose runner has not exited yet still uses its staging: trimmed later.
        finished = sorted((j for j in self._jobs.values()
                           if j.state in FINISHED and j.id not in self._runners),
                          key=lambda j: j.sequence)
        for job in finished[: max(0, len(finished) - self._history)]:
            del self._jobs[job.id]
            self._store.delete(job.id)
            if job.work is not None:
                job.work.discard()

    def _apply(self, job: JobRecord, event: JobEvent) -> JobState:
        """Move a job (under ``_lock``) and queue the notification of it."""
        state = job.apply(event)
        self._events.append((job, event))
        return state

    def _notify(self) -> None:
        """Tell the listeners what happened, in order; called with ``_lock`` released."""
        with self._notifying:
            with self._lock:
                events, self._events = self._events, []
            for job, event in events:
                for listener in list(self.listeners):
                    try:
                        listener(job, event)
                    except Exception:
                        self._log_error(f"Transfers: a job listener failed on {event.value} "
                                        f"of {job.id}: {traceback.format_exc()}")

    def _save(self, job: JobRecord) -> None:
        try:
            self._store.save(job)
        except OSError as e:
            self._log_error(f"Transfers: cannot save job {job.id}: {e}")
