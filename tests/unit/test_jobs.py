"""The job state machine, every (state, event) pair, and the public job form."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from orthanc_transfers.errors import InvalidTransition
from orthanc_transfers.jobs import (
    IGNORED,
    TRANSITIONS,
    JobEvent,
    JobRecord,
    JobState,
    RunContext,
    next_state,
    orthanc_time,
)

P, R, Z, S, F = (JobState.PENDING, JobState.RUNNING, JobState.PAUSED, JobState.SUCCESS,
                 JobState.FAILURE)
ALL_PAIRS = [(state, event) for state in JobState for event in JobEvent]
ORTHANC_TIME = re.compile(r"^\d{8}T\d{6}\.\d{6}$")

# What the engine relies on, written out again so that a change to the table shows here.
EXPECTED_MOVES = {
    (P, JobEvent.START): R, (P, JobEvent.PAUSE): Z, (P, JobEvent.CANCEL): F,
    (P, JobEvent.INTERRUPT): P,
    (R, JobEvent.PAUSE): Z, (R, JobEvent.CANCEL): F, (R, JobEvent.SUCCEED): S,
    (R, JobEvent.FAIL): F, (R, JobEvent.INTERRUPT): P,
    (Z, JobEvent.RESUME): P, (Z, JobEvent.CANCEL): F, (Z, JobEvent.INTERRUPT): Z,
    (F, JobEvent.RESUBMIT): P,
}


def test_table_is_the_expected_one() -> None:
    assert TRANSITIONS == EXPECTED_MOVES
    assert not set(TRANSITIONS) & IGNORED


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS,
                         ids=[f"{s.value}-{e.value}" for s, e in ALL_PAIRS])
def test_every_pair(state: JobState, event: JobEvent) -> None:
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
    elif (state, event) in IGNORED:
        assert next_state(state, event) is state
    else:
        with pytest.raises(InvalidTransition) as caught:
            next_state(state, event)
        assert caught.value.http_status == 409
        assert event.value in caught.value.message
        assert state.value in caught.value.message


@pytest.mark.parametrize(("state", "event"), [
    (S, JobEvent.RESUBMIT), (P, JobEvent.RESUBMIT), (R, JobEvent.START), (S, JobEvent.START),
    (P, JobEvent.SUCCEED), (Z, JobEvent.FAIL),
])
def test_some_illegal_pairs(state: JobState, event: JobEvent) -> None:
    with pytest.raises(InvalidTransition):
        next_state(state, event)


def test_states_use_orthanc_strings() -> None:
    assert [s.value for s in JobState] == ["Pending", "Running", "Paused", "Success", "Failure"]


class StubWork:
    def __init__(self, progress: float = 0.5) -> None:
        self._progress = progress

    def run(self, context: RunContext) -> None:
        return None

    def content(self) -> dict[str, Any]:
        return {"Peer": "remote", "TotalInstances": 3}

    def progress(self) -> float:
        return self._progress

    def discard(self) -> None:
        return None


def record(**changes: Any) -> JobRecord:
    values: dict[str, Any] = {"id": "job-1", "type": "PullTransfer",
                              "request": {"Peer": "remote"}, "priority": 7}
    values.update(changes)
    return JobRecord(**values)


def test_apply_moves_and_keeps_the_clock() -> None:
    job = record()
    assert job.apply(JobEvent.START) is R
    assert job.started_at is not None
    assert job.apply(JobEvent.SUCCEED) is S
    assert job.completion_time is not None and job.started_at is None


def test_apply_refuses_illegal_event_and_keeps_state() -> None:
    job = record()
    with pytest.raises(InvalidTransition):
        job.apply(JobEvent.SUCCEED)
    assert job.state is P


def test_resubmit_clears_completion_time() -> None:
    job = record(state=F, completion_time=datetime.datetime.now(datetime.UTC))
    job.apply(JobEvent.RESUBMIT)
    assert job.completion_time is None
    assert "CompletionTime" not in job.to_orthanc()


def test_runtime_accumulates_over_runs() -> None:
    job = record()
    job.apply(JobEvent.START)
    job.apply(JobEvent.PAUSE)
    first = job.effective_runtime
    assert first >= 0.0 and job.started_at is None
    job.apply(JobEvent.RESUME)
    job.apply(JobEvent.START)
    job.apply(JobEvent.FAIL)
    assert job.effective_runtime >= first


def test_orthanc_time_format() -> None:
    moment = datetime.datetime(2024, 3, 9, 7, 5, 4, 123, tzinfo=datetime.UTC)
    assert orthanc_time(moment) == "20240309T070504.000123"
    other_zone = moment.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert orthanc_time(other_zone) == "20240309T070504.000123"


ORTHANC_KEYS = {"ID", "Type", "State", "Priority", "Progress", "CreationTime",
                "EffectiveRuntime", "ErrorCode", "ErrorDescription", "ErrorDetails",
                "Timestamp", "Content"}


def test_to_orthanc_pending_without_work() -> None:
    answer = record(saved_progress=0.25, saved_content={"Peer": "x"}).to_orthanc()
    assert set(answer) == ORTHANC_KEYS
    assert answer["ID"] == "job-1" and answer["Type"] == "PullTransfer"
    assert (answer["State"], answer["Priority"], answer["Progress"]) == ("Pending", 7, 25)
    assert ORTHANC_TIME.match(answer["CreationTime"])
    assert ORTHANC_TIME.match(answer["Timestamp"])
    assert (answer["ErrorCode"], answer["ErrorDescription"], answer["ErrorDetails"]) == (
        0, "Success", "")
    assert answer["Content"] == {"Peer": "x"}
    json.dumps(answer)


def test_to_orthanc_content_is_always_an_object() -> None:
    assert record().to_orthanc()["Content"] == {}


def test_to_orthanc_running_with_work() -> None:
    job = record(work=StubWork(0.5))
    job.apply(JobEvent.START)
    answer = job.to_orthanc()
    assert answer["State"] == "Running"
    assert answer["Progress"] == 50
    assert isinstance(answer["Progress"], int)
    assert answer["Content"] == {"Peer": "remote", "TotalInstances": 3}
    assert "CompletionTime" not in answer
    assert isinstance(answer["EffectiveRuntime"], float)


@pytest.mark.parametrize(("events", "progress"), [
    ([JobEvent.START, JobEvent.SUCCEED], 100),
    ([JobEvent.START, JobEvent.FAIL], 50),
    ([JobEvent.CANCEL], 50),
])
def test_to_orthanc_finished_has_completion_time(events: list[JobEvent], progress: int) -> None:
    job = record(work=StubWork(0.5))
    for event in events:
        job.apply(event)
    answer = job.to_orthanc()
    assert ORTHANC_TIME.match(answer["CompletionTime"])
    assert answer["Progress"] == progress
    assert 0 <= answer["Progress"] <= 100


def test_saved_round_trip() -> None:
    job = record(work=StubWork(0.5), sequence=12, error_code=9,
                 error_description="Peer failed", error_details="HTTP 503")
    job.apply(JobEvent.START)
    job.apply(JobEvent.FAIL)
    saved = json.loads(json.dumps(job.to_saved()))
    restored = JobRecord.from_saved(saved)
    for name in ("id", "type", "request", "priority", "state", "creation_time",
                 "completion_time", "error_code", "error_description", "error_details",
                 "sequence"):
        assert getattr(restored, name) == getattr(job, name), name
    assert restored.effective_runtime == pytest.approx(job.effective_runtime)
    assert restored.saved_content == {"Peer": "remote", "TotalInstances": 3}
    assert restored.saved_progress == 0.5
    assert restored.work is None
    assert restored.to_orthanc()["Content"] == job.to_orthanc()["Content"]


def test_saved_pending_job_has_no_completion_time() -> None:
    restored = JobRecord.from_saved(json.loads(json.dumps(record().to_saved())))
    assert restored.completion_time is None
    assert restored.state is P
