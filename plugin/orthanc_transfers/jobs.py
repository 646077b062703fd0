"""Transfer jobs: their state machine (a table) and their public form.

The Python plugin cannot create native Orthanc jobs (python-plugin-notes §2), so
transfer jobs live in our own registry (``engine.py``) and are shown through
``/jobs`` with exactly the keys, states and time format of Orthanc's own jobs.

The machine is data: :data:`TRANSITIONS` maps ``(state, event)`` to the next state;
:data:`IGNORED` lists the pairs that Orthanc accepts as no-ops (pausing a paused job);
every other pair raises :class:`InvalidTransition` (HTTP 409) naming both.
"""

from __future__ import annotations

import datetime
import enum
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import InvalidTransition


class JobState(enum.Enum):
    """Values are Orthanc's own state strings."""

    PENDING = "Pending"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCESS = "Success"
    FAILURE = "Failure"


class JobEvent(enum.Enum):
    START = "start"            # the scheduler gives the job a runner
    PAUSE = "pause"            # POST /jobs/{id}/pause
    RESUME = "resume"          # POST /jobs/{id}/resume
    CANCEL = "cancel"          # POST /jobs/{id}/cancel
    RESUBMIT = "resubmit"      # POST /jobs/{id}/resubmit
    SUCCEED = "succeed"        # the runner finished its work
    FAIL = "fail"              # the runner gave up with an error
    INTERRUPT = "interrupt"    # Orthanc is stopping: run again at the next start


TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (JobState.PENDING, JobEvent.START): JobState.RUNNING,
    (JobState.PENDING, JobEvent.PAUSE): JobState.PAUSED,
    (JobState.PENDING, JobEvent.CANCEL): JobState.FAILURE,
    (JobState.PENDING, JobEvent.INTERRUPT): JobState.PENDING,
    (JobState.RUNNING, JobEvent.PAUSE): JobState.PAUSED,
    (JobState.RUNNING, JobEvent.CANCEL): JobState.FAILURE,
    (JobState.RUNNING, JobEvent.SUCCEED): JobState.SUCCESS,
    (JobState.RUNNING, JobEvent.FAIL): JobState.FAILURE,
    (JobState.RUNNING, JobEvent.INTERRUPT): JobState.PENDING,
    (JobState.PAUSED, JobEvent.RESUME): JobState.PENDING,
    (JobState.PAUSED, JobEvent.CANCEL): JobState.FAILURE,
    (JobState.PAUSED, JobEvent.INTERRUPT): JobState.PAUSED,
    (JobState.FAILURE, JobEvent.RESUBMIT): JobState.PENDING,
}

#: Requests that Orthanc's own registry answers with success and no effect.
IGNORED: frozenset[tuple[JobState, JobEvent]] = frozenset({
    (JobState.PAUSED, JobEvent.PAUSE),
    (JobState.PENDING, JobEvent.RESUME),
    (JobState.RUNNING, JobEvent.RESUME),
    (JobState.SUCCESS, JobEvent.PAUSE),
    (JobState.FAILURE, JobEvent.PAUSE),
    (JobState.SUCCESS, JobEvent.RESUME),
    (JobState.FAILURE, JobEvent.RESUME),
    (JobState.SUCCESS, JobEvent.CANCEL),
    (JobState.FAILURE, JobEvent.CANCEL),
    (JobState.SUCCESS, JobEvent.INTERRUPT),
    (JobState.FAILURE, JobEvent.INTERRUPT),
})

FINISHED = frozenset({JobState.SUCCESS, JobState.FAILURE})


def next_state(state: JobState, event: JobEvent) -> JobState:
    """The state after ``event``; unchanged for ignored pairs; 409 for the rest."""
    if (state, event) in TRANSITIONS:
        return TRANSITIONS[(state, event)]
    if (state, event) in IGNORED:
        return state
    raise InvalidTransition(f"Cannot {event.value} a job whose state is {state.value}")


def orthanc_time(moment: datetime.datetime) -> str:
    """``YYYYMMDDTHHMMSS.ffffff`` in UTC, as Orthanc writes job times."""
    return moment.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%S.%f")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Work(Protocol):
    """What a job does; the engine runs it and shows it (pull, push, tracking)."""

    def run(self, context: RunContext) -> None:
        """Do (or continue) the work; raise Paused/Cancelled when the context says so."""
        ...

    def content(self) -> dict[str, Any]:
        """The job's public ``Content`` (always an object)."""
        ...

    def progress(self) -> float:
        """0.0 to 1.0."""
        ...

    def discard(self) -> None:
        """Forget staged data: the job leaves the history."""
        ...


class RunContext(Protocol):
    job_id: str

    def check(self) -> None:
        """Raise Paused or Cancelled if the job was told to stop."""
        ...

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up (and raise) as soon as the job is told to stop."""
        ...

    def changed(self) -> None:
        """Progress or content moved: persist and notify (cheaply, rate-limited)."""
        ...

    def waiting(self) -> AbstractContextManager[None]:
        """Around a wait for an unreachable peer: the job's slot runs another job
        meanwhile, and is taken back (after a wait for one, if need be) at the exit."""
        ...


@dataclass
class JobRecord:
    """A transfer job as the registry holds it (the work object is attached)."""

    id: str
    type: str
    request: dict[str, Any]
    priority: int = 0
    state: JobState = JobState.PENDING
    creation_time: datetime.datetime = field(default_factory=utc_now)
    completion_time: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    effective_runtime: float = 0.0            # seconds spent running, over every run
    error_code: int = 0
    error_description: str = "Success"
    error_details: str = ""
    sequence: int = 0                         # submission order, breaks priority ties
    saved_content: dict[str, Any] = field(default_factory=dict)
    saved_progress: float = 0.0
    work: Work | None = None

    def apply(self, event: JobEvent) -> JobState:
        before = self.state
        self.state = next_state(before, event)
        now = utc_now()
        if self.state is JobState.RUNNING and before is not JobState.RUNNING:
            self.started_at = now
        if before is JobState.RUNNING and self.state is not JobState.RUNNING:
            self._stop_clock(now)
        if self.state in FINISHED:
            self.completion_time = now
        elif before in FINISHED:
            self.completion_time = None
        return self.state

    def _stop_clock(self, now: datetime.datetime) -> None:
        if self.started_at is not None:
            self.effective_runtime += (now - self.started_at).total_seconds()
            self.started_at = None

    def progress(self) -> float:
        if self.state is JobState.SUCCESS:
            return 1.0
        return self.work.progress() if self.work is not None else self.saved_progress

    def content(self) -> dict[str, Any]:
        if self.work is not None:
            return self.work.content()
        return dict(self.saved_content)

    def runtime(self) -> float:
        running = (utc_now() - self.started_at).total_seconds() if self.started_at else 0.0
        return self.effective_runtime + running

    def to_orthanc(self) -> dict[str, Any]:
        """The object of ``GET /jobs/{id}``, with the keys of Orthanc 1.10's own jobs."""
        now = utc_now()
        progress = self.progress()
        answer: dict[str, Any] = {
            "ID": self.id,
            "Type": self.type,
            "State": self.state.value,
            "Priority": self.priority,
            "Progress": int(progress * 100),
            "CreationTime": orthanc_time(self.creation_time),
            "EffectiveRuntime": round(self.runtime(), 3),
            "ErrorCode": self.error_code,
            "ErrorDescription": self.error_description,
            "ErrorDetails": self.error_details,
            "Timestamp": orthanc_time(now),
            "Content": self.content(),
        }
        if self.completion_time is not None:
            answer["CompletionTime"] = orthanc_time(self.completion_time)
        if self.state is JobState.RUNNING and 0.0 < progress < 1.0:
            remaining = self.runtime() * (1.0 - progress) / progress
            answer["EstimatedTimeOfArrival"] = orthanc_time(
                now + datetime.timedelta(seconds=remaining))
        return answer

    def to_saved(self) -> dict[str, Any]:
        """What survives a restart (the work keeps its own staging manifest)."""
        return {
            "ID": self.id, "Type": self.type, "Request": self.request,
            "Priority": self.priority, "State": self.state.value,
            "CreationTime": self.creation_time.isoformat(),
            "CompletionTime": self.completion_time.isoformat() if self.completion_time else None,
            "EffectiveRuntime": self.runtime(), "ErrorCode": self.error_code,
            "ErrorDescription": self.error_description, "ErrorDetails": self.error_details,
            "Sequence": self.sequence, "Content": self.content(), "Progress": self.progress(),
        }

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> JobRecord:
        completion = saved.get("CompletionTime")
        return cls(
            id=saved["ID"], type=saved["Type"], request=saved["Request"],
            priority=int(saved.get("Priority", 0)), state=JobState(saved["State"]),
            creation_time=datetime.datetime.fromisoformat(saved["CreationTime"]),
            completion_time=datetime.datetime.fromisoformat(completion) if completion else None,
            effective_runtime=float(saved.get("EffectiveRuntime", 0.0)),
            error_code=int(saved.get("ErrorCode", 0)),
            error_description=saved.get("ErrorDescription", "Success"),
            error_details=saved.get("ErrorDetails", ""),
            sequence=int(saved.get("Sequence", 0)),
            saved_content=dict(saved.get("Content") or {}),
            saved_progress=float(saved.get("Progress", 0.0)),
        )
