"""Background observers of a server during an import: route latencies, polled values, CPU.

:class:`Prober` times a Python route and a core route alternately: the Python route waits
whenever the plugin's interpreter is busy holding the GIL, the core route does not.
:class:`Poller` keeps every answer of a polled route with its time. :class:`CpuReading`
is one reading of the CPU clocks the import figures subtract.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from bench import measure


class Prober(threading.Thread):
    """Times a Python route and a core route, alternately, ``interval`` seconds apart."""

    ROUTES = {"python": "/plugins/transfers", "core": "/system"}

    def __init__(self, url: str, interval: float = 0.03) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, str, float, int]] = []   # start, kind, s, status
        self.stop_event = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            session.headers["Accept-Encoding"] = "identity"
            while not self.stop_event.is_set():
                for kind, route in self.ROUTES.items():
                    self._time(session, kind, route)
                self.stop_event.wait(self.interval)

    def _time(self, session: requests.Session, kind: str, route: str) -> None:
        t = time.perf_counter()
        try:
            status = session.get(self.url + route, timeout=60).status_code
        except requests.RequestException:
            status = -1                                # counted as a failed probe
        self.samples.append((t, kind, time.perf_counter() - t, status))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(90)

    def window(self, kind: str, start: float, end: float) -> list[float]:
        """Latencies (s) of the requests of ``kind`` started between ``start`` and ``end``."""
        return [s for t, k, s, _ in self.samples if k == kind and start <= t <= end]

    def failures(self) -> list[tuple[float, str, float, int]]:
        return [s for s in self.samples if s[3] != 200]


class Poller(threading.Thread):
    """Calls ``fetch`` every ``interval`` seconds, keeping (time, value) until stopped; an
    exception is kept as the value."""

    def __init__(self, fetch: Callable[[], Any], interval: float) -> None:
        super().__init__(daemon=True)
        self.fetch = fetch
        self.interval = interval
        self.samples: list[tuple[float, Any]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                value = self.fetch()
            except Exception as e:
                value = e
            self.samples.append((time.perf_counter(), value))
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(90)


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds used so far by the machine, this process, the target and the source."""

    machine: float
    bench: float
    target: float
    source: float

    @classmethod
    def take(cls, target_pid: int, source_pid: int) -> CpuReading:
        return cls(measure.system_busy_seconds(), measure.cpu_seconds(),
                   measure.cpu_seconds(target_pid), measure.cpu_seconds(source_pid))

    def __sub__(self, other: CpuReading) -> CpuReading:
        return CpuReading(self.machine - other.machine, self.bench - other.bench,
                          self.target - other.target, self.source - other.source)

    @property
    def others(self) -> float:
        """Of a difference: what every other process of the machine used."""
        return self.machine - (self.target + self.source + self.bench)
