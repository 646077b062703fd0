"""Retry policy for peer requests: an immutable value, in the manner of urllib3.

``RetryPolicy.increment(error)`` never mutates: it returns the policy for the next
attempt (one retry fewer, one more line of history) or raises :class:`RetriesExhausted`
``from`` the error. :meth:`RetryPolicy.backoff` is pure arithmetic (it takes its random
draw); sleeping is the caller's business (``run_with_retries`` takes a ``sleep`` and a
``draw`` so tests never wait). Pauses have jitter: threads that lost their connections
at the same moment do not all come back at the same moment.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from .errors import RetriesExhausted, TransfersError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    #: retries left (``MaxHttpRetries``): total attempts = 1 + retries
    retries: int = 0
    #: first pause in seconds; the n-th retry waits ``backoff_factor * 2**(n-1)``
    backoff_factor: float = 1.0
    #: longest pause in seconds
    backoff_max: float = 30.0
    #: each pause is drawn in ``[1 - jitter, 1 + jitter]`` times its nominal length
    jitter: float = 0.25
    #: one line per failed attempt, oldest first
    history: tuple[str, ...] = ()

    @property
    def attempts_made(self) -> int:
        return len(self.history)

    def backoff(self, draw: float = 0.5) -> float:
        """Seconds to wait before the next attempt (0 before the first one); ``draw``
        in [0, 1) places it within the jitter (0.5: the nominal pause)."""
        if not self.history:
            return 0.0
        nominal = min(self.backoff_max, self.backoff_factor * 2 ** (len(self.history) - 1))
        return float(nominal * (1 - self.jitter + 2 * self.jitter * draw))

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, TransfersError) and error.retryable

    def increment(self, error: BaseException) -> RetryPolicy:
        """The policy for the next attempt, or :class:`RetriesExhausted` from ``error``."""
        history = (*self.history, f"attempt {len(self.history) + 1}: {error}")
        if self.retries <= 0 or not self.is_retryable(error):
            reason = "no retry left" if self.retries <= 0 else "not retryable"
            raise RetriesExhausted(f"{error} ({len(history)} attempt(s), {reason})",
                                   error, history) from error
        return replace(self, retries=self.retries - 1, history=history)

    def __repr__(self) -> str:
        return (f"RetryPolicy(retries={self.retries}, attempts_made={self.attempts_made}, "
                f"backoff={self.backoff():.1f}s)")


def run_with_retries(action: Callable[[], T], policy: RetryPolicy, *,
                     sleep: Callable[[float], object] = time.sleep,
                     draw: Callable[[], float] = random.random,
                     should_stop: Callable[[], None] = lambda: None,
                     on_retry: Callable[[BaseException], None] = lambda _: None) -> T:
    """Call ``action`` until it succeeds or ``policy`` is exhausted.

    ``should_stop`` is called before every attempt and may raise (pause, cancel);
    ``on_retry`` is told of every failed attempt that will be retried.
    """
    while True:
        should_stop()
        try:
            return action()
        except RetriesExhausted:      # an inner policy gave up: not ours to retry
            raise
        except TransfersError as error:
            policy = policy.increment(error)
            on_retry(error)
            sleep(policy.backoff(draw()))
