"""A small pool that runs the buckets of one job, and how many it keeps in flight.

Unlike ``ThreadPoolExecutor`` it stops taking work at the first error or stop request
(in-flight items finish, queued ones are left for a resume), an item may hand back more
items (an instance whose MD5 failed gives back its buckets), and the number of threads
may grow while it runs: :class:`InFlight` adds requests when the round trip, not the
bandwidth, is what each request waits for.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
#: A round trip (seconds) above which a link counts as long before any bucket is timed.
LONG_RTT = 0.02


class InFlight:
    """``Threads`` requests in flight, more on links where latency dominates.

    Each request waits one round trip that moves no byte; with ``n`` requests the link
    idles unless the others fill those gaps. Keeping ``Threads * (1 + rtt / request)``
    requests in flight fills them, up to twice ``Threads``.
    """

    SMOOTHING = 0.3

    def __init__(self, threads: int, cap: int | None = None) -> None:
        self.base = max(1, threads)
        self.cap = cap or 2 * self.base
        self._rtt: float | None = None
        self._request: float | None = None
        self._lock = threading.Lock()

    def observe_rtt(self, seconds: float) -> None:
        """Duration of a small request (lookup, transaction creation)."""
        with self._lock:
            self._rtt = seconds if self._rtt is None else min(self._rtt, seconds)

    @property
    def rtt(self) -> float | None:
        """The shortest small request seen (None before any)."""
        with self._lock:
            return self._rtt

    def observe_request(self, seconds: float) -> None:
        """Duration of one bucket request."""
        with self._lock:
            if self._request is None:
                self._request = seconds
            else:
                self._request += self.SMOOTHING * (seconds - self._request)

    def target(self) -> int:
        with self._lock:
            if self._rtt is None:
                return self.base
            if not self._request:
                # No bucket has come back yet. On a long link the first wave would end
                # all at once (the requests share the bandwidth) and leave it idle for
                # a round trip: start with more, as if a request took two round trips.
                share = 0.5 if self._rtt >= LONG_RTT else 0.0
            else:
                share = min(1.0, self._rtt / self._request)
        return min(self.cap, math.floor(self.base * (1.0 + share) + 0.5))


def run_parallel(items: Iterable[T], work: Callable[[T], Iterable[T]],
                 threads: int | InFlight, check: Callable[[], None], name: str,
                 on_drained: Callable[[], None] | None = None) -> None:
    """Run ``work`` on every item; raise the first error once every thread is done.

    ``on_drained`` is called once, when the last queued item is taken (its work and
    the others' may still be running): the push sender commits from there.
    """
    queue: deque[T] = deque(items)
    lock = threading.Lock()
    errors: list[BaseException] = []
    in_flight = threads if isinstance(threads, InFlight) else InFlight(threads, threads)
    pool: list[threading.Thread] = []
    drained = on_drained is None

    def next_item() -> tuple[bool, T | None, bool]:
        nonlocal drained
        with lock:
            if errors or not queue:
                return False, None, False
            item = queue.popleft()
            last = not queue and not drained
            drained = drained or last
            return True, item, last

    def loop() -> None:
        while True:
            try:
                check()
                found, item, last = next_item()
                if not found:
                    return
                if last and on_drained is not None:
                    on_drained()
                more = list(work(item))        # type: ignore[arg-type]
                if more:
                    with lock:
                        queue.extend(more)
            except BaseException as e:
                with lock:
                    errors.append(e)
                return

    def grow() -> None:
        with lock:
            wanted = min(in_flight.target(), len(pool) + len(queue))
            if errors:
                return
        while len(pool) < wanted:
            thread = threading.Thread(target=loop, name=f"{name}-{len(pool)}", daemon=True)
            pool.append(thread)
            thread.start()

    grow()
    while alive := [thread for thread in pool if thread.is_alive()]:
        alive[0].join(0.2)       # not a finished thread's join, which would spin
        grow()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
