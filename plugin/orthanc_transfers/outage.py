"""Riding out a peer that stays unreachable for longer than one request's retries.

Retries (:mod:`.retry`) cover a reset or a peer that is back within seconds. Beyond
that a transfer does not fail: it *waits* — keeping what it has, probing the peer at
growing intervals (:meth:`OutagePolicy.pause`) — and runs again from where it stopped
once the peer answers, until the outage has lasted ``OutageDeadline`` seconds. Which
errors are an outage (:func:`is_outage`): the peer could not be reached (refused, reset,
timed out) or a gateway in front of it said so (502, 503, 504). Anything else — a
refusal, corrupted data, a protocol error — fails the job as before.

:class:`OutageLog` is what a job remembers of its outages (for its Content); the
arithmetic is pure and takes ``now`` and a random draw, so tests never sleep.
:func:`wait_before_probe` is the one wait that transfer and tracking jobs share.
"""

from __future__ import annotations

import datetime
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import PeerHttpError, PeerUnreachable, last_error

if TYPE_CHECKING:
    from .jobs import RunContext
    from .metrics import Metrics

#: HTTP statuses of a gateway or a peer that is down or restarting.
OUTAGE_STATUSES = frozenset({502, 503, 504})


def is_outage(error: BaseException) -> bool:
    """Does ``error`` (or the last error of exhausted retries) say the peer is away?"""
    cause = last_error(error)
    if isinstance(cause, PeerUnreachable):
        return True
    return isinstance(cause, PeerHttpError) and cause.status in OUTAGE_STATUSES


@dataclass(frozen=True)
class OutagePolicy:
    """How long to wait between two probes of an unreachable peer, and for how long."""

    #: seconds an outage may last before the job fails (``OutageDeadline``); 0: at once
    deadline: float
    #: first pause; doubles after each failed probe, up to ``longest_pause``
    first_pause: float = 5.0
    longest_pause: float = 60.0
    #: each pause is drawn in ``[1 - jitter, 1 + jitter]`` times its nominal length, so
    #: that the jobs of one sender do not all knock at the same second
    jitter: float = 0.25

    def pause(self, probes: int, draw: float) -> float:
        """Seconds before probe number ``probes + 1``; ``draw`` in [0, 1)."""
        nominal = min(self.longest_pause, self.first_pause * 2.0 ** probes)
        return nominal * (1 - self.jitter + 2 * self.jitter * draw)

    def gives_up_in(self, started: float, now: float) -> float:
        """Seconds left before an outage that began at ``started`` fails the job."""
        return max(0.0, started + self.deadline - now)


@dataclass
class Outage:
    """The outage a job is in: since when, why, and when it probes next."""

    peer: str
    reason: str
    started: float                      # time.monotonic()
    since: datetime.datetime            # wall clock, for people
    probes: int = 0
    next_probe: float = 0.0             # time.monotonic()
    waiting: bool = True                # False while an attempt runs after a probe answered


class OutageLog:
    """A job's outages: the current one (None when the peer answers), how many it rode
    out and how long it waited in all. Written by the job's runner thread, read by
    REST handlers (Content): both under ``_lock``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: Outage | None = None
        self.count = 0
        self.waited = 0.0

    def begin(self, peer: str, reason: str, now: float) -> tuple[Outage, bool]:
        """The outage in progress (continued: an attempt after a probe moved nothing),
        or a new one; True if new."""
        with self._lock:
            new = self.current is None
            if self.current is None:
                self.current = Outage(peer, reason, now, _utc_now())
                self.count += 1
            self.current.reason, self.current.waiting = reason, True
            return self.current, new

    def scheduled(self, next_probe: float) -> None:
        with self._lock:
            if self.current is not None:
                self.current.next_probe = next_probe

    def waited_for(self, seconds: float) -> None:
        """A pause is over and the peer is probed."""
        with self._lock:
            self.waited += seconds
            if self.current is not None:
                self.current.probes += 1

    def resumed(self) -> None:
        """The peer answered a probe: the next attempt runs."""
        with self._lock:
            if self.current is not None:
                self.current.waiting = False

    def end(self) -> None:
        """The transfer moved again: the outage is over."""
        with self._lock:
            self.current = None

    def content(self, policy: OutagePolicy, now: float) -> dict[str, Any]:
        """``WaitedSeconds`` and ``Outages``, and ``Waiting`` while the job waits."""
        with self._lock:
            content: dict[str, Any] = {"WaitedSeconds": round(self.waited),
                                       "Outages": self.count}
            outage = self.current
            if outage is not None and outage.waiting:
                content["Waiting"] = {
                    "Peer": outage.peer, "Reason": outage.reason,
                    "Since": outage.since.isoformat(timespec="seconds"),
                    "NextTryInSeconds": round(max(0.0, outage.next_probe - now)),
                    "GivesUpInSeconds": round(policy.gives_up_in(outage.started, now))}
        return content


def wait_before_probe(log: OutageLog, outage: Outage, policy: OutagePolicy,
                      context: RunContext, metrics: Metrics) -> bool:
    """Wait until the next probe of ``outage`` (not past its deadline) and count the
    wait; False, without waiting, once the deadline has passed."""
    left = policy.gives_up_in(outage.started, time.monotonic())
    if left <= 0:
        return False
    pause = min(policy.pause(outage.probes, random.random()), left)
    log.scheduled(time.monotonic() + pause)
    context.changed()
    context.wait(pause)
    log.waited_for(pause)
    metrics.add("outage_waits_count")
    metrics.add("outage_wait_seconds", pause)
    return True


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
