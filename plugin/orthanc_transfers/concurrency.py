"""Every thread of the plugin starts here; the locking rules are written down here.

Threads, who starts them and who stops them:

* **Job runners** (``TF-JOB-*``): :class:`~.engine.JobEngine` starts one
  :class:`Background` per running job, at most ``ConcurrentJobs`` (a job waiting for
  an unreachable peer lends its slot to another meanwhile). A pause, cancel or
  stop sets the runner's stop event; the work sees it at its next ``check()`` and raises
  a :class:`~.errors.StopSignal`. ``JobEngine.stop`` joins every runner.
* **Work pools** (``TF-PULL-*``, ``TF-PUSH-*``, ``TF-COMMIT-*``, ``TF-IMPORT-*``,
  ``TF-DETECT-*``): a :class:`WorkPool` per phase of a job run (bucket downloads,
  bucket uploads, imports) or per ``GET /transfers/peers``. Its owner creates it and
  always drains it (or cancels, then drains) before returning, so no pool outlives the
  run or the request that made it. Its threads stop at the first error or stop signal;
  queued items are then left for a resume.
* **Early commit** (``TF-PUSH-COMMIT``): a :class:`Background` per push run, waited
  for by that run.
* **Prefetch** (``TF-PREFETCH``): a :class:`Background` per lookup or push start that
  reads a bounded number of bytes into the file cache and ends by itself.
* Orthanc's own threads run the REST handlers and the change callback.

Locks: each guards only what is listed, and none is held while waiting on the network,
on Orthanc's API or on another thread (logging aside), except the throttles, which exist
to bound those calls, and ``JobEngine._notifying``, held while the listeners run.

=============================  ==========================================================
``JobEngine._lock`` (RLock)    the job table, the runners (and which of them wait for
                               a peer without a slot), the submission counter, the
                               events not yet notified; listeners are called after it
                               is released
``JobEngine._notifying``       (RLock) notifications go out one batch at a time, in order
``_Runner.stop_event``         (Event) a job was told to pause, cancel or stop
``TransferStats.lock``         every counter and the phase of one job run
``OutageLog._lock``            a job's outages: the current one, how many, time waited
``WorkPool._lock``             a pool's queue, errors and threads
``InFlight._lock``             its round-trip and request-time estimates
``EncodingChooser._lock``      its link and CPU estimates
``DownloadArea._lock``         written buckets, verified instances, MD5 failure counts
``PushReceiver._lock``         the transaction table, the committed IDs, and each
                               transaction's ``in_flight`` / ``committing``
``PushTransaction.arrival``    (Condition) wakes an early commit when a bucket lands
``ImportStream._lock``         the instances imported so far
``InstanceSource._lock``       which instance is being loaded (one ``Event`` each)
``FileCache._lock``            the cached files and their counters
``Announcements._lock``        announced instances (``RestrictChunksToTransfers``)
``Metrics._lock``              the counters published to Orthanc
``HttpPools._lock``            the connection pools, one per peer origin
``OrthancHost._idle``          (Condition) calls into Orthanc in progress; a stop waits
                               for none to be left
``_LoopbackImports._lock``     (host.py) the switch from HTTP imports to ``RestApiPost``
=============================  ==========================================================

Nestings, outer to inner, and no others: ``JobEngine._notifying`` → ``JobEngine._lock``
→ ``TransferStats.lock`` or ``OutageLog._lock`` (a job's Content is saved under the
engine's lock);
``PushTransaction.arrival`` → ``PushReceiver._lock``, then ``DownloadArea._lock`` (an
early commit asking whether every bucket is here); ``WorkPool._lock`` →
``InFlight._lock`` (the pool's width). :class:`Throttles` are process-wide and created
once, by the assembly (``app.py``), so that every call site names the throttle it takes.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
#: A round trip (seconds) above which a link counts as long before any bucket is timed.
LONG_RTT = 0.02
#: Instances above this size (bytes) are imported one at a time (``Throttles.big_imports``).
BIG_INSTANCE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Throttles:
    """Process-wide limits, shared by every job and request."""

    #: Compressions at once: one per core. More only share the cores, so that every
    #: bucket of a wave is ready late instead of the first ones early (measured: 4 at
    #: once on 2 cores were all ready after 64-100 ms, the first alone after 33 ms).
    encoders: threading.BoundedSemaphore
    #: Chunk answers read and encoded at once (``Threads``), so that a burst of chunk
    #: requests cannot fill the memory with files and payloads.
    chunk_slots: threading.BoundedSemaphore
    #: Orthanc holds about 3 times a file while storing it: instances above
    #: ``BIG_INSTANCE`` go one by one (4 x 1 GB would be 12 GB).
    big_imports: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, chunk_slots: int, cores: int | None = None) -> Throttles:
        return cls(encoders=threading.BoundedSemaphore(cores or os.cpu_count() or 1),
                   chunk_slots=threading.BoundedSemaphore(max(1, chunk_slots)))


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


class WorkPool(Generic[T]):
    """Threads that run ``work`` on queued items, as many as ``width`` says.

    Unlike ``ThreadPoolExecutor`` it stops taking work at the first error or stop signal
    (items in flight finish, queued ones stay for a resume), an item may hand back more
    items (an instance whose MD5 failed gives back its buckets), and its width may grow
    while it runs (:class:`InFlight`). ``on_drained`` is called once, when the last
    queued item is taken: the push sender commits from there.
    """

    def __init__(self, work: Callable[[T], Iterable[T]], width: int | InFlight, *,
                 name: str, check: Callable[[], None] = lambda: None,
                 on_drained: Callable[[], object] | None = None) -> None:
        self._work = work
        self._width = width if isinstance(width, InFlight) else InFlight(width, width)
        self._name = name
        self._check = check
        self._on_drained = on_drained
        self._queue: deque[T] = deque()
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []    # started and not yet leaving
        self._count = 0                               # threads ever started (names)
        self._cancelled = False
        self._lock = threading.Lock()

    def submit(self, items: Iterable[T]) -> None:
        """Queue items and start threads for them (none once cancelled or failed)."""
        with self._lock:
            if self._cancelled or self._errors:
                return
            self._queue.extend(items)
        self._grow()

    def cancel(self) -> None:
        """Drop the queued items; the ones in flight finish."""
        with self._lock:
            self._cancelled = True
            self._queue.clear()

    def first_error(self) -> BaseException | None:
        with self._lock:
            return self._errors[0] if self._errors else None

    def drain(self) -> None:
        """Wait for the queue to empty and every thread to end; raise the first error.
        Widens the pool meanwhile, as the link's measures come in."""
        while busy := self._registered():
            busy[0].join(0.2)        # not a finished thread's join, which would spin
            self._grow()
        error = self.first_error()
        if error is not None:
            raise error

    def _registered(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _grow(self) -> None:
        with self._lock:
            if self._errors or self._cancelled:
                return
            wanted = min(self._width.target(), len(self._threads) + len(self._queue))
            started = [threading.Thread(target=self._loop, daemon=True,
                                        name=f"{self._name}-{self._count + n}")
                       for n in range(wanted - len(self._threads))]
            self._count += len(started)
            self._threads.extend(started)
        for thread in started:
            thread.start()

    def _next(self) -> tuple[bool, T | None]:
        """The next item; a thread that finds none leaves the pool in the same step, so
        that an item queued meanwhile always finds a thread (``_grow`` starts one)."""
        with self._lock:
            if self._errors or not self._queue:
                self._threads.remove(threading.current_thread())
                return False, None
            item = self._queue.popleft()
            on_drained = None
            if not self._queue:
                on_drained, self._on_drained = self._on_drained, None
        if on_drained is not None:
            on_drained()
        return True, item

    def _loop(self) -> None:
        while True:
            try:
                self._check()
                found, item = self._next()
                if not found:
                    return
                more = list(self._work(item))        # type: ignore[arg-type]
                if more:
                    self.submit(more)
            except BaseException as e:
                with self._lock:
                    self._errors.append(e)
                    self._threads.remove(threading.current_thread())
                return


def run_parallel(items: Iterable[T], work: Callable[[T], Iterable[T]],
                 width: int | InFlight, check: Callable[[], None], name: str,
                 on_drained: Callable[[], object] | None = None) -> None:
    """Run ``work`` on every item with a :class:`WorkPool`; raise the first error once
    every thread is done."""
    pool = WorkPool(work, width, name=name, check=check, on_drained=on_drained)
    pool.submit(items)
    pool.drain()


class Background:
    """One function on its own thread, whose outcome its owner collects."""

    def __init__(self, function: Callable[[], object], name: str) -> None:
        self._function = function
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._done = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> Background:
        self._thread.start()
        return self

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def _run(self) -> None:
        try:
            self._function()
        except BaseException as e:
            self.error = e
        finally:
            self._done.set()

    def wait(self, check: Callable[[], None] = lambda: None, poll: float = 0.1) -> bool:
        """Wait until it ends (``check`` may raise meanwhile); True if it raised nothing.
        False at once if it never started."""
        if not self.started:
            return False
        while not self._done.wait(poll):
            check()
        return self.error is None

    def join(self, timeout: float | None = None) -> None:
        if self.started:
            self._thread.join(timeout)
