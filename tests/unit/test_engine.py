"""The job engine: running, priorities, pause, cancel, resubmit, failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import FakeWork, Harness, wait_for, wait_state
from orthanc_transfers.errors import (
    ORTHANC_CANCELED_JOB,
    Cancelled,
    InvalidTransition,
    Paused,
    PeerHttpError,
    TransfersError,
    UnknownResource,
)
from orthanc_transfers.jobs import JobEvent, JobRecord, JobState

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "jobs")
    yield h
    h.close()


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
    wait_for(lambda: len(seen) == 2, "notified just after the lock is released")
    assert seen == [JobEvent.START, JobEvent.SUCCEED]


def test_listeners_run_outside_the_lock_and_a_failing_one_is_contained(
        harness: Harness) -> None:
    """A notification may query the engine (no deadlock) and may raise (logged only)."""
    engine = harness.engine()
    seen: list[tuple[JobEvent, int]] = []

    def broken(job: JobRecord, event: JobEvent) -> None:
        raise RuntimeError("listener bug")

    engine.listeners.append(broken)
    engine.listeners.append(lambda job, event: seen.append((event, len(engine.jobs()))))
    job, _ = harness.submit(engine, "a", release=True)
    wait_state(job, JobState.SUCCESS)
    wait_for(lambda: len(seen) == 2, "notified just after the lock is released")
    assert [event for event, _ in seen] == [JobEvent.START, JobEvent.SUCCEED]
    assert any("listener bug" in line for line in harness.errors)
    other, _ = harness.submit(engine, "b", release=True)
    wait_state(other, JobState.SUCCESS)
