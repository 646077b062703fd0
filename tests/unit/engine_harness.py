"""Fake work objects and a harness for JobEngine tests (shared by test_engine*.py).

Nothing here sleeps for a fixed time: work objects block on events, and ``wait_for``
polls a predicate up to a deadline and fails naming what it waited for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orthanc_transfers.engine import JobEngine, JobStore
from orthanc_transfers.errors import Cancelled, Paused
from orthanc_transfers.jobs import JobRecord, JobState, RunContext


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class FakeWork:
    """Runs until ``release`` is set (or fails at once with ``fail_with``).

    With ``ignore_stop`` it looks at the context only once released, like a work stuck
    in a long request.
    """

    def __init__(self, name: str, started_order: list[str]) -> None:
        self.name = name
        self.started_order = started_order
        self.release = threading.Event()
        self.exited = threading.Event()
        self.discarded = threading.Event()
        self.fail_with: BaseException | None = None
        self.ignore_stop = False
        self.discarded_while_running = False
        self.runs = 0
        self.seen: list[type[BaseException]] = []

    def run(self, context: RunContext) -> None:
        self.exited.clear()
        self.runs += 1
        self.started_order.append(self.name)
        try:
            if self.fail_with is not None:
                raise self.fail_with
            while not self.release.is_set():
                if self.ignore_stop:
                    self.release.wait(0.01)
                else:
                    context.wait(0.01)
            context.check()
        except (Paused, Cancelled) as e:
            self.seen.append(type(e))
            raise
        finally:
            self.exited.set()

    def content(self) -> dict[str, Any]:
        return {"Name": self.name, "Runs": self.runs}

    def progress(self) -> float:
        return 0.5

    def discard(self) -> None:
        self.discarded_while_running = not self.exited.is_set()
        self.discarded.set()


class Harness:
    """Engines on one store directory, and the fake works they were given, by name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.works: dict[str, FakeWork] = {}
        self.started_order: list[str] = []
        self.errors: list[str] = []
        self.engines: list[JobEngine] = []

    def factory(self, job_type: str, request: dict[str, Any], job_id: str) -> FakeWork:
        name = request["name"]
        if name not in self.works:
            self.works[name] = FakeWork(name, self.started_order)
        return self.works[name]

    def engine(self, concurrent_jobs: int = 2, history_size: int = 10,
               start: bool = True) -> JobEngine:
        engine = JobEngine(JobStore(self.directory), self.factory,
                           concurrent_jobs=concurrent_jobs, history_size=history_size,
                           log_error=self.errors.append)
        self.engines.append(engine)
        if start:
            engine.start()
        return engine

    def submit(self, engine: JobEngine, name: str, priority: int = 0,
               release: bool = False) -> tuple[JobRecord, FakeWork]:
        if release:
            self.works[name] = FakeWork(name, self.started_order)
            self.works[name].release.set()
        job = engine.submit("PullTransfer", {"name": name}, priority)
        return job, self.works[name]

    def close(self) -> None:
        for work in self.works.values():
            work.release.set()
        for engine in self.engines:
            engine.stop()


def runner_alive(job: JobRecord) -> bool:
    return any(t.name == f"TF-JOB-{job.id[:8]}" for t in threading.enumerate())


def wait_state(job: JobRecord, state: JobState) -> None:
    wait_for(lambda: job.state is state, f"job {job.request} to be {state.value} "
             f"(is {job.state.value})")
