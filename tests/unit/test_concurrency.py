"""run_parallel: the bucket pool of one job."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest
from orthanc_transfers.concurrency import run_parallel
from orthanc_transfers.errors import Paused

pytestmark = pytest.mark.timeout(30)


def no_stop() -> None:
    return None


class Recorder:
    def __init__(self) -> None:
        self.items: list[int] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def record(self, item: int) -> None:
        with self.lock:
            self.items.append(item)
            self.threads.add(threading.current_thread().name)


@pytest.mark.parametrize("threads", [1, 4, 16])
def test_every_item_is_processed_once(threads: int) -> None:
    recorder = Recorder()

    def work(item: int) -> Iterable[int]:
        recorder.record(item)
        return []

    run_parallel(range(100), work, threads, no_stop, "TF-TEST")
    assert sorted(recorder.items) == list(range(100))
    assert all(name.startswith("TF-TEST-") for name in recorder.threads)


def test_no_items() -> None:
    called: list[int] = []

    def work(item: int) -> Iterable[int]:
        called.append(item)
        return []

    run_parallel([], work, 4, no_stop, "TF-TEST")
    assert called == []


def test_items_returned_by_work_are_processed() -> None:
    recorder = Recorder()

    def work(item: int) -> Iterable[int]:
        recorder.record(item)
        return [item - 1] if item > 0 else []

    run_parallel([3, 10], work, 2, no_stop, "TF-TEST")
    assert sorted(recorder.items) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10]


def test_first_error_stops_new_items_and_is_raised() -> None:
    recorder = Recorder()
    first, second = ValueError("item 3"), ValueError("item 5")

    def work(item: int) -> Iterable[int]:
        recorder.record(item)
        if item == 3:
            raise first
        if item == 5:
            raise second
        return []

    with pytest.raises(ValueError) as caught:
        run_parallel(range(10), work, 1, no_stop, "TF-TEST")
    assert caught.value is first
    assert recorder.items == [0, 1, 2, 3]


def test_error_with_many_threads_is_raised_after_all_threads_finish() -> None:
    started = threading.Barrier(4)
    finished: list[int] = []

    def work(item: int) -> Iterable[int]:
        if item < 4:
            started.wait(10)              # four items in flight at once
        if item == 0:
            raise RuntimeError("bucket 0 failed")
        finished.append(item)
        return []

    with pytest.raises(RuntimeError, match="bucket 0"):
        run_parallel(range(4), work, 4, no_stop, "TF-TEST")
    assert sorted(finished) == [1, 2, 3]          # in-flight items completed


def test_check_raising_stops_the_pool() -> None:
    recorder = Recorder()
    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise Paused("job paused")

    def work(item: int) -> Iterable[int]:
        recorder.record(item)
        if item == 2:
            stop.set()
        return []

    with pytest.raises(Paused):
        run_parallel(range(10), work, 1, check, "TF-TEST")
    assert recorder.items == [0, 1, 2]


def test_in_flight_starts_at_threads_and_grows_with_latency() -> None:
    from orthanc_transfers.concurrency import InFlight

    lan = InFlight(4)
    assert lan.target() == 4                      # nothing measured yet
    lan.observe_rtt(0.001)
    assert lan.target() == 4                      # a short link, no bucket timed yet
    lan.observe_request(0.05)
    assert lan.target() == 4                      # latency is 2 % of a request
    wan = InFlight(4)
    wan.observe_rtt(0.2)
    assert wan.target() == 6                      # a long link: 1.5 x before any timing
    wan.observe_request(0.75)
    assert wan.target() == 5                      # 4 x (1 + 0.27), rounded
    wan.observe_rtt(0.5)                          # the smallest round trip is kept
    for _ in range(20):
        wan.observe_request(0.1)                  # requests shorter than a round trip
    assert wan.target() == 8                      # capped at twice Threads


def test_run_parallel_adds_threads_when_in_flight_grows() -> None:
    import threading

    from orthanc_transfers.concurrency import InFlight, run_parallel

    in_flight = InFlight(1, cap=4)
    names: set[str] = set()
    lock = threading.Lock()

    def work(item: int) -> list[int]:
        with lock:
            names.add(threading.current_thread().name)
        if item == 0:
            in_flight.observe_rtt(1.0)
            in_flight.observe_request(1.0)       # latency-bound: up to 2 in flight
        threading.Event().wait(0.05)
        return []

    run_parallel(range(30), work, in_flight, lambda: None, "T")
    assert len(names) >= 2


def test_on_drained_is_called_once_when_the_last_item_is_taken() -> None:
    from orthanc_transfers.concurrency import run_parallel

    taken: list[int] = []
    calls: list[list[int]] = []

    def work(item: int) -> list[int]:
        taken.append(item)
        return [100] if item == 4 else []        # handed back after the drain

    run_parallel(range(5), work, 1, lambda: None, "T",
                 on_drained=lambda: calls.append(list(taken)))
    assert calls == [[0, 1, 2, 3]]               # before the last item's work, once
    assert taken == [0, 1, 2, 3, 4, 100]
    empty: list[int] = []
    run_parallel([], work, 2, lambda: None, "T", on_drained=lambda: empty.append(1))
    assert empty == []


def test_a_pool_takes_items_submitted_after_its_threads_ended() -> None:
    """ImportStream submits as instances get verified: a pool whose threads found the
    queue empty and left must start one again for a later item."""
    from orthanc_transfers.concurrency import WorkPool

    done: list[int] = []
    pool: WorkPool[int] = WorkPool(lambda n: done.append(n) or [], 2, name="TEST")
    pool.submit([1, 2])
    pool.drain()
    pool.submit([3])
    pool.drain()
    assert sorted(done) == [1, 2, 3]


def test_cancel_drops_what_is_queued_and_the_first_error_is_raised() -> None:
    import threading

    from orthanc_transfers.concurrency import WorkPool

    started = threading.Event()
    release = threading.Event()

    def work(n: int) -> list[int]:
        started.set()
        release.wait(5)
        if n == 0:
            raise ValueError("first item failed")
        return []

    pool: WorkPool[int] = WorkPool(work, 1, name="TEST")
    pool.submit(range(5))
    assert started.wait(5)
    pool.cancel()
    pool.submit([99])                 # refused once cancelled
    release.set()
    with pytest.raises(ValueError, match="first item failed"):
        pool.drain()
