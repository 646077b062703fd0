"""What the benchmark reads from Linux: CPU time and peak RSS of a process, and a timeline.

* CPU: ``utime + stime`` of ``/proc/PID/stat`` (all threads of the process).
* Peak RSS: ``VmHWM`` of ``/proc/PID/status``. Writing ``5`` to ``/proc/PID/clear_refs``
  resets it to the current RSS, so the peak of one transfer can be read on a server that
  was just loaded with the study.
* :class:`Sampler` records, every 100 ms, the bytes on the wire and the CPU time of each
  process; :func:`phases` turns that into "waiting / moving data / finishing" figures.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()   # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_busy_seconds() -> float:
    """CPU time used by every process of the machine (first line of ``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]                    # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS   # up to steal; guest is inside user


def clocks(pids: dict[str, int]) -> dict[str, Callable[[], float]]:
    """CPU clocks of the given processes, of this process (``bench``), of the machine."""
    result: dict[str, Callable[[], float]] = {
        role: functools.partial(cpu_seconds, pid) for role, pid in pids.items()}
    result["bench"] = cpu_seconds
    result["machine"] = system_busy_seconds
    return result


def other_cores(window: float = 1.0) -> float:
    """Cores used by every process but this one, averaged over ``window`` seconds."""
    machine, own, t = system_busy_seconds(), cpu_seconds(), time.perf_counter()
    time.sleep(window)
    used = system_busy_seconds() - machine - (cpu_seconds() - own)
    return max(0.0, used / (time.perf_counter() - t))


def wait_until_quiet(max_wait: float, threshold: float = 0.25) -> tuple[float, float]:
    """Wait until other processes use less than ``threshold`` cores, at most ``max_wait`` s.

    Returns (seconds waited, cores used by others in the last window).
    """
    started = time.monotonic()
    while True:
        cores = other_cores()
        waited = time.monotonic() - started
        if cores < threshold or waited >= max_wait:
            return waited, cores


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    return _status_kib(pid, "VmRSS") * 1024 / 1e6


def peak_rss_mb(pid: int) -> float:
    return _status_kib(pid, "VmHWM") * 1024 / 1e6


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS; False if the kernel refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


@dataclass
class Sample:
    t: float                        # seconds since the sampler started
    wire: int | None                # bytes on the wire so far (None without proxy)
    cpu: dict[str, float]           # role -> CPU seconds since the sampler started


@dataclass
class Sampler:
    """Background sampling of wire bytes and of CPU clocks (see :func:`clocks`)."""

    clocks: dict[str, Callable[[], float]]
    wire: Callable[[], int | None]
    interval: float = 0.1
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0
    _cpu0: dict[str, float] = field(default_factory=dict)
    _wire0: int = 0

    def _take(self) -> Sample:
        wire = self.wire()
        cpu = {role: clock() - self._cpu0[role] for role, clock in self.clocks.items()}
        return Sample(time.perf_counter() - self._t0,
                      None if wire is None else wire - self._wire0, cpu)

    def start(self) -> float:
        """Take the first sample; returns its ``perf_counter`` time."""
        self._cpu0 = {role: clock() for role, clock in self.clocks.items()}
        self._wire0 = self.wire() or 0
        self._t0 = time.perf_counter()
        self.samples = [self._take()]
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()
        return self._t0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self._take())

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(self._take())
        return self.samples


def _time_at(samples: list[Sample], value: float) -> float:
    """First time the wire counter reached ``value`` (linear between samples)."""
    previous = samples[0]
    for sample in samples:
        if sample.wire is not None and sample.wire >= value:
            if sample is previous or previous.wire is None or sample.wire == previous.wire:
                return sample.t
            share = (value - previous.wire) / (sample.wire - previous.wire)
            return previous.t + share * (sample.t - previous.t)
        previous = sample
    return samples[-1].t


def _cpu_at(samples: list[Sample], role: str, t: float) -> float:
    previous = samples[0]
    for sample in samples:
        if sample.t >= t:
            if sample.t == previous.t:
                return sample.cpu[role]
            share = (t - previous.t) / (sample.t - previous.t)
            return previous.cpu[role] + share * (sample.cpu[role] - previous.cpu[role])
        previous = sample
    return samples[-1].cpu[role]


def phases(samples: list[Sample], seconds: float, bandwidth: float) -> dict[str, object] | None:
    """Split a transfer at 2 % and 98 % of its wire bytes.

    ``before_s``: request to 2 % (job start, reading and hashing, first buckets);
    ``data_s``: 2 % to 98 % (the bulk); ``after_s``: 98 % to job success (last
    buckets, commit/import). ``link_busy_pct``: bytes moved in the bulk window over what
    the link could carry in it. ``cpu_*``: CPU cores used by each process in each window.
    """
    total = samples[-1].wire
    if total is None or total <= 0 or len(samples) < 3:
        return None
    start, end = _time_at(samples, 0.02 * total), _time_at(samples, 0.98 * total)
    end = min(max(end, start), seconds)
    windows = {"before": (0.0, start), "data": (start, end), "after": (end, seconds)}
    result: dict[str, object] = {f"{name}_s": round(b - a, 3)
                                 for name, (a, b) in windows.items()}
    if bandwidth and end > start:
        result["link_busy_pct"] = round(100 * 0.96 * total * 8 / bandwidth / (end - start), 1)
    for role in ("src", "dst", "bench"):
        for name, (a, b) in windows.items():
            if b - a > 0.05:
                used = _cpu_at(samples, role, b) - _cpu_at(samples, role, a)
                result[f"cpu_{role}_{name}_cores"] = round(used / (b - a), 2)
    return result
