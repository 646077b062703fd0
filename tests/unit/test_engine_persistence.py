"""The job engine over time: history trimming, stop, restart from the job store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import FakeWork, Harness, runner_alive, wait_for, wait_state
from orthanc_transfers.errors import Cancelled, UnknownResource
from orthanc_transfers.jobs import JobEvent, JobState

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "jobs")
    yield h
    h.close()


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


def test_cancelled_job_trimmed_from_history_stays_deleted(harness: Harness) -> None:
    engine = harness.engine(history_size=0)
    job, work = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    engine.act(job.id, JobEvent.CANCEL)
    assert work.exited.wait(10)
    wait_for(lambda: not runner_alive(job), "the runner to exit")
    assert not engine.has(job.id)
    assert work.discarded.is_set()
    # A job that left the history must not come back at the next start.
    assert not (harness.directory / f"{job.id}.json").exists()


def test_history_trimming_does_not_discard_a_running_work(harness: Harness) -> None:
    engine = harness.engine(history_size=0)
    harness.works["a"] = FakeWork("a", harness.started_order)
    harness.works["a"].ignore_stop = True    # stuck in a request: exits a bit later
    job, work = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    engine.act(job.id, JobEvent.CANCEL)
    assert job.state is JobState.FAILURE
    work.release.set()
    assert work.exited.wait(10)
    wait_for(lambda: not runner_alive(job), "the runner to exit")
    wait_for(work.discarded.is_set, "the work to be discarded")
    # Its staging area was still in use: discarding must wait until the runner is out.
    assert not work.discarded_while_running


def test_stop_interrupts_runners(harness: Harness) -> None:
    engine = harness.engine()
    job, work = harness.submit(engine, "a")
    wait_state(job, JobState.RUNNING)
    engine.stop()
    assert work.exited.is_set()
    assert len(work.seen) == 1 and issubclass(work.seen[0], Cancelled)
    assert job.state is JobState.PENDING
    assert not runner_alive(job)


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


def test_saved_jobs_are_listed_from_load_and_run_from_start(harness: Harness) -> None:
    crashed = harness.engine()
    job, _ = harness.submit(crashed, "a")
    wait_state(job, JobState.RUNNING)
    harness.works.clear()

    loaded = harness.engine(start=False)
    loaded.load()              # at plugin load: before Orthanc reports itself started
    assert loaded.get(job.id).state is JobState.PENDING and harness.works["a"].runs == 0
    loaded.start()
    again = loaded.get(job.id)
    wait_state(again, JobState.RUNNING)
    harness.works["a"].release.set()
    wait_state(again, JobState.SUCCESS)


def test_corrupt_saved_job_is_set_aside(harness: Harness) -> None:
    harness.directory.mkdir(parents=True)
    (harness.directory / "broken.json").write_text("{not json")
    engine = harness.engine()
    assert engine.jobs() == []
    assert (harness.directory / "broken.corrupt").exists()
