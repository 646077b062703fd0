"""The job engine with fake work objects whose progress the test controls.

No test sleeps: work objects block on events, and ``wait_for`` polls a predicate up to a
deadline and fails with the last state it saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from orthanc_transfers.engine import JobEngine, JobStore
from orthanc_transfers.errors import (
    ORTHANC_CANCELED_JOB,
    Cancelled,
    InvalidTransition,
    Paused,
    PeerHttpError,
    TransfersError,
    UnknownResource,
)
from orthanc_transfers.jobs import JobEvent, JobRecord, JobState, RunContext

pytestmark = pytest.mark.timeout(60)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class FakeWork:
    """Runs until ``release`` is set (or fails at once with ``fail_with``)."""

    def __init__(self, name: str, started_order: list[str]) -> None:
        self.name = name
        self.started_order = started_order
        self.release = threading.Event()
        self.exited = threading.Event()
        self.discarded = threading.Event()
        self.fail_with: BaseException | None = None
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
                context.wait(0.01)
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

    def engine(self, concurrent_jobs: int = 2, history_size: int = 10) -> JobEngine:
        engine = JobEngine(JobStore(self.directory), self.factory,
                           concurrent_jobs=concurrent_jobs, history_size=history_size,
                           log_error=self.errors.append)
        self.engines.append(engine)
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


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "jobs")
    yield h
    h.close()


def wait_state(job: JobRecord, state: JobState) -> None:
    wait_for(lambda: job.state is state, f"job {job.request} to be {state.value} "
             f"(is {job.state.value})")


def test_submit_runs_to_success(harness: Harness) -> None:
    engine = harness.engine()
    job, work = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    assert engine.get(job.id) is job
    work.release.set()
    wait_state(job, JobState.SUCCESS)
    answer = job.to_orthanc()
    assert (answer["State"], answer["Progress"], answer["ErrorCode"]) == ("Success", 100, 0)
    assert "CompletionTime" in answer
    assert (harness.directory / f"{job.id}.json").exists()


def test_higher_priority_pending_job_starts_first(harness: Harness) -> None:
    engine = harness.engine(concurrent_jobs=1)
    first, blocker = harness.submit(engine, "first")
    wait_state(first, JobState.RUNNING)
    low = harness.submit(engine, "low", priority=0, release=True)[0]
    high = harness.submit(engine, "high", priority=5, release=True)[0]
    high_later = harness.submit(engine, "high-later", priority=5, release=True)[0]
    assert {low.state, high.state, high_later.state} == {JobState.PENDING}
    blocker.release.set()
    for job in (low, high, high_later):
        wait_state(job, JobState.SUCCESS)
    assert harness.started_order == ["first", "high", "high-later", "low"]


def test_pause_and_resume(harness: Harness) -> None:
    engine = harness.engine()
    job, work = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    engine.act(job.id, JobEvent.PAUSE)
    assert job.state is JobState.PAUSED
    assert work.exited.wait(10)
    assert work.seen == [Paused]
    assert job.state is JobState.PAUSED
    engine.act(job.id, JobEvent.RESUME)
    wait_for(lambda: work.runs == 2, "the work to run again")
    wait_state(job, JobState.RUNNING)
    work.release.set()
    wait_state(job, JobState.SUCCESS)


def test_pausing_a_pending_job_keeps_it_from_starting(harness: Harness) -> None:
    engine = harness.engine(concurrent_jobs=1)
    first, blocker = harness.submit(engine, "first")
    wait_state(first, JobState.RUNNING)
    second, work = harness.submit(engine, "second", release=True)
    engine.act(second.id, JobEvent.PAUSE)
    blocker.release.set()
    wait_state(first, JobState.SUCCESS)
    assert (second.state, work.runs) == (JobState.PAUSED, 0)
    engine.act(second.id, JobEvent.RESUME)
    wait_state(second, JobState.SUCCESS)


def test_cancel_then_resubmit(harness: Harness) -> None:
    engine = harness.engine()
    job, work = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    engine.act(job.id, JobEvent.CANCEL)
    assert job.state is JobState.FAILURE
    assert work.exited.wait(10)
    assert work.seen == [Cancelled]
    answer = job.to_orthanc()
    assert (answer["State"], answer["ErrorCode"]) == ("Failure", ORTHANC_CANCELED_JOB)
    assert "CompletionTime" in answer

    engine.act(job.id, JobEvent.RESUBMIT)
    wait_for(lambda: work.runs == 2, "the resubmitted work to run")
    assert job.state in (JobState.PENDING, JobState.RUNNING)
    assert job.to_orthanc()["ErrorCode"] == 0
    work.release.set()
    wait_state(job, JobState.SUCCESS)


def test_actions_on_unknown_or_wrong_jobs(harness: Harness) -> None:
    engine = harness.engine()
    with pytest.raises(UnknownResource):
        engine.act("no-such-job", JobEvent.PAUSE)
    job, _ = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    with pytest.raises(InvalidTransition):
        engine.act(job.id, JobEvent.RESUBMIT)
    assert job.state is JobState.RUNNING


@pytest.mark.parametrize(("error", "code", "description", "details"), [
    (PeerHttpError("Peer answered 503", status=503, details="POST /transfers/push"),
     9, "Peer answered 503", "POST /transfers/push"),
    (TransfersError("Something failed"), 1, "Something failed", "Something failed"),
])
def test_transfers_error_fails_the_job(harness: Harness, error: TransfersError, code: int,
                                       description: str, details: str) -> None:
    engine = harness.engine()
    harness.works["a"] = FakeWork("a", harness.started_order)
    harness.works["a"].fail_with = error
    job, _ = harness.submit(engine, "a")
    wait_state(job, JobState.FAILURE)
    answer = job.to_orthanc()
    assert (answer["ErrorCode"], answer["ErrorDescription"], answer["ErrorDetails"]) == (
        code, description, details)


def test_unexpected_exception_fails_the_job_and_engine_goes_on(harness: Harness) -> None:
    engine = harness.engine()
    harness.works["bad"] = FakeWork("bad", harness.started_order)
    harness.works["bad"].fail_with = RuntimeError("kaput")
    job, _ = harness.submit(engine, "bad")
    wait_state(job, JobState.FAILURE)
    assert "RuntimeError: kaput" in job.to_orthanc()["ErrorDetails"]
    assert any("kaput" in line for line in harness.errors)
    other, _ = harness.submit(engine, "good", release=True)
    wait_state(other, JobState.SUCCESS)


def test_listeners_see_every_transition(harness: Harness) -> None:
    engine = harness.engine()
    seen: list[JobEvent] = []
    engine.listeners.append(lambda job, event: seen.append(event))
    job, _ = harness.submit(engine, "a", release=True)
    wait_state(job, JobState.SUCCESS)
    assert seen == [JobEvent.START, JobEvent.SUCCEED]


def test_history_trimming_discards_oldest_finished_jobs(harness: Harness) -> None:
    engine = harness.engine(history_size=1)
    first, first_work = harness.submit(engine, "first", release=True)
    wait_state(first, JobState.SUCCESS)
    second, second_work = harness.submit(engine, "second", release=True)
    wait_state(second, JobState.SUCCESS)
    wait_for(lambda: not engine.has(first.id), "the oldest job to leave the history")
    assert first_work.discarded.is_set()
    assert not second_work.discarded.is_set()
    assert not (harness.directory / f"{first.id}.json").exists()
    assert [j.id for j in engine.jobs()] == [second.id]
    with pytest.raises(UnknownResource):
        engine.get(first.id)


def test_stop_interrupts_runners(harness: Harness) -> None:
    engine = harness.engine()
    job, work = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    engine.stop()
    assert work.exited.is_set()
    assert len(work.seen) == 1 and issubclass(work.seen[0], Cancelled)
    assert job.state is JobState.PENDING
    assert not any(t.name.startswith("TF-JOB-") and t.is_alive()
                   for t in threading.enumerate() if t.name.endswith(job.id[:8]))


def test_jobs_survive_a_clean_restart(harness: Harness) -> None:
    engine = harness.engine()
    done, _ = harness.submit(engine, "done", release=True)
    wait_state(done, JobState.SUCCESS)
    running, work = harness.submit(engine, "running")
    wait_state(running, JobState.RUNNING)
    engine.stop()

    harness.works.clear()                      # the new engine builds new work objects
    restarted = harness.engine()
    assert [j.id for j in restarted.jobs()] == [done.id, running.id]
    assert restarted.get(done.id).state is JobState.SUCCESS
    assert restarted.get(done.id).to_orthanc()["Content"] == {"Name": "done", "Runs": 0}
    again = restarted.get(running.id)
    new_work = harness.works["running"]
    assert new_work is not work
    wait_for(lambda: new_work.runs == 1, "the interrupted job to run again")
    new_work.release.set()
    wait_state(again, JobState.SUCCESS)


def test_a_job_saved_as_running_comes_back_pending(harness: Harness) -> None:
    crashed = harness.engine()
    job, _ = harness.submit(crashed, "a")
    wait_state(job, JobState.RUNNING)         # saved as Running; the process "dies" here
    harness.works.clear()                     # (teardown's stop() interrupts it)

    idle = harness.engine(concurrent_jobs=0)
    assert idle.get(job.id).state is JobState.PENDING

    harness.works.clear()
    revived = harness.engine(concurrent_jobs=1)
    again = revived.get(job.id)
    wait_state(again, JobState.RUNNING)
    assert harness.works["a"].runs == 1
    harness.works["a"].release.set()
    wait_state(again, JobState.SUCCESS)


def test_corrupt_saved_job_is_set_aside(harness: Harness) -> None:
    harness.directory.mkdir(parents=True)
    (harness.directory / "broken.json").write_text("{not json")
    engine = harness.engine()
    assert engine.jobs() == []
    assert (harness.directory / "broken.corrupt").exists()
