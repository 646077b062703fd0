"""RetryPolicy driven by hand, as urllib3's test_retry does; nothing sleeps."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from orthanc_transfers.errors import (
    BadRequest,
    Cancelled,
    IntegrityError,
    Paused,
    PeerHttpError,
    PeerProtocolError,
    PeerUnreachable,
    RetriesExhausted,
    TransfersError,
)
from orthanc_transfers.retry import RetryPolicy, run_with_retries


def unavailable() -> PeerHttpError:
    return PeerHttpError("HTTP 503 from peer", peer="p", uri="/transfers/push", status=503)


def test_increment_returns_a_new_policy() -> None:
    policy = RetryPolicy(retries=2)
    error = unavailable()
    after = policy.increment(error)
    assert after is not policy
    assert (policy.retries, policy.history) == (2, ())
    assert after.retries == 1
    assert after.attempts_made == 1
    assert after.history == ("attempt 1: HTTP 503 from peer",)
    assert after.increment(error).history[-1] == "attempt 2: HTTP 503 from peer"


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(retries=10, backoff_factor=1.0, backoff_max=5.0)
    assert policy.backoff() == 0.0
    waits = []
    for _ in range(5):
        policy = policy.increment(unavailable())
        waits.append(policy.backoff())
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_has_jitter_around_the_nominal_pause() -> None:
    """Pauses are spread over ±25 % so that threads that failed together do not all
    come back together; the draw is the caller's, so this is exact."""
    policy = RetryPolicy(retries=3).increment(unavailable()).increment(unavailable())
    assert (policy.backoff(0.0), policy.backoff(0.5), policy.backoff(0.999)) == \
        (1.5, 2.0, pytest.approx(2.499))
    assert RetryPolicy(retries=1, jitter=0).increment(unavailable()).backoff(0.9) == 1.0


def test_backoff_factor() -> None:
    policy = RetryPolicy(retries=3, backoff_factor=0.5).increment(unavailable())
    assert policy.increment(unavailable()).backoff() == 1.0


def test_exhausted_raises_from_the_error_with_history() -> None:
    policy = RetryPolicy(retries=1).increment(unavailable())
    last = PeerUnreachable("connection refused", peer="p")
    with pytest.raises(RetriesExhausted) as caught:
        policy.increment(last)
    exhausted = caught.value
    assert exhausted.__cause__ is last
    assert exhausted.last is last
    assert exhausted.history == ("attempt 1: HTTP 503 from peer",
                                 "attempt 2: connection refused")
    assert "2 attempt(s)" in exhausted.message
    assert "connection refused" in exhausted.details


def test_no_retries_means_one_attempt() -> None:
    with pytest.raises(RetriesExhausted) as caught:
        RetryPolicy().increment(unavailable())
    assert len(caught.value.history) == 1


@pytest.mark.parametrize(("error", "retryable"), [
    (PeerHttpError("x", status=None), True),
    (PeerHttpError("x", status=500), True),
    (PeerHttpError("x", status=503), True),
    (PeerHttpError("x", status=408), True),
    (PeerHttpError("x", status=429), True),
    (PeerHttpError("x", status=400), False),
    (PeerHttpError("x", status=404), False),
    (PeerUnreachable("x"), True),
    (PeerProtocolError("x"), True),
    (IntegrityError("bad md5"), True),
    (BadRequest("x"), False),
    (Cancelled("x"), False),
    (ValueError("x"), False),
])
def test_is_retryable(error: BaseException, retryable: bool) -> None:
    assert RetryPolicy(retries=3).is_retryable(error) is retryable


def test_non_retryable_error_is_not_retried() -> None:
    error = PeerHttpError("HTTP 404", status=404)
    with pytest.raises(RetriesExhausted) as caught:
        RetryPolicy(retries=5).increment(error)
    assert caught.value.__cause__ is error
    assert "not retryable" in caught.value.message


class Script:
    """An action that raises the given errors in turn, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: str = "done") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def nominal_draw() -> float:
    """The middle of the jitter: every pause at its nominal length."""
    return 0.5


def recorder() -> tuple[list[float], Callable[[float], None]]:
    calls: list[float] = []
    return calls, calls.append


def test_run_with_retries_sleeps_between_attempts() -> None:
    sleeps, sleep = recorder()
    action = Script(unavailable(), PeerUnreachable("reset"))
    assert run_with_retries(action, RetryPolicy(retries=3), sleep=sleep,
                            draw=nominal_draw) == "done"
    assert action.calls == 3
    assert sleeps == [1.0, 2.0]


def test_run_with_retries_success_first_time() -> None:
    sleeps, sleep = recorder()
    assert run_with_retries(Script(), RetryPolicy(retries=3), sleep=sleep) == "done"
    assert sleeps == []


def test_run_with_retries_exhausted() -> None:
    sleeps, sleep = recorder()
    action = Script(unavailable(), unavailable(), unavailable())
    with pytest.raises(RetriesExhausted) as caught:
        run_with_retries(action, RetryPolicy(retries=2), sleep=sleep, draw=nominal_draw)
    assert action.calls == 3
    assert sleeps == [1.0, 2.0]
    assert len(caught.value.history) == 3


def test_run_with_retries_does_not_retry_404() -> None:
    sleeps, sleep = recorder()
    action = Script(PeerHttpError("HTTP 404", status=404))
    with pytest.raises(RetriesExhausted):
        run_with_retries(action, RetryPolicy(retries=2), sleep=sleep)
    assert (action.calls, sleeps) == (1, [])


@pytest.mark.parametrize("stop", [Cancelled("job cancelled"), Paused("job paused")])
def test_stop_errors_propagate_unchanged(stop: TransfersError) -> None:
    sleeps, sleep = recorder()
    action = Script(stop)
    with pytest.raises(type(stop)) as caught:
        run_with_retries(action, RetryPolicy(retries=2), sleep=sleep)
    assert caught.value is stop
    assert (action.calls, sleeps) == (1, [])


def test_should_stop_is_checked_before_every_attempt() -> None:
    sleeps, sleep = recorder()
    action = Script(unavailable())
    checks = 0

    def should_stop() -> None:
        nonlocal checks
        checks += 1
        if checks == 2:
            raise Paused("job paused")

    with pytest.raises(Paused):
        run_with_retries(action, RetryPolicy(retries=2), sleep=sleep, draw=nominal_draw,
                         should_stop=should_stop)
    assert (action.calls, sleeps) == (1, [1.0])


def test_nested_exhaustion_is_not_wrapped_again() -> None:
    inner = RetriesExhausted("inner", unavailable(), ("attempt 1: x",))
    with pytest.raises(RetriesExhausted) as caught:
        run_with_retries(Script(inner), RetryPolicy(retries=2), sleep=lambda _: None)
    assert caught.value is inner


def test_foreign_exceptions_propagate() -> None:
    with pytest.raises(KeyError):
        run_with_retries(Script(KeyError("k")), RetryPolicy(retries=2), sleep=lambda _: None)


def test_repr_shows_counters() -> None:
    policy = RetryPolicy(retries=2).increment(unavailable())
    assert repr(policy) == "RetryPolicy(retries=1, attempts_made=1, backoff=1.0s)"
