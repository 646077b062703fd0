"""What a fuzzing property checks on the servers around its run, besides the answers.

A hostile input may do its harm quietly: a traceback logged while the answer looks
fine, a file written next to Orthanc's storage, sparse files that are not sparse, a
decompression that fills the memory and is freed before anyone looks. Each check takes
a reading before the run and compares after it; :func:`assert_servers_sound` does the
three that every property wants.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from types import TracebackType

from ..orthanc_server import OrthancServer
from .calls import Findings, alive

#: The plugin's directory inside Orthanc's storage directory.
STAGING = "transfers-staging"
LOG_ERRORS = re.compile(r"Traceback|Transfers: unexpected error")

#: Relative path -> (size, mtime in ns); (0, 0) for a directory.
Snapshot = dict[str, tuple[int, int]]


class LogWatch:
    """Lines of a server's log that match :data:`LOG_ERRORS` written since creation."""

    def __init__(self, server: OrthancServer) -> None:
        self.server = server
        self.offset = server.log_path.stat().st_size if server.log_path.exists() else 0

    def new_errors(self) -> list[str]:
        with open(self.server.log_path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
        return [line[:300] for line in text.splitlines() if LOG_ERRORS.search(line)]


_ORTHANC_OWN = re.compile(r"^(orthanc\.log$|storage/index(-wal|-shm|-journal)?$|"
                          r"storage/[0-9a-f]{2}(/[0-9a-f]{2}(/[^/]+)?)?$)")


def snapshot(server: OrthancServer) -> Snapshot:
    """Every file and directory under the server's directory, with size and mtime,
    except the staging directory, Orthanc's attachments, its index and the log."""
    root = server.workdir
    staging = server.storage / STAGING
    found: Snapshot = {}
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        dirnames[:] = [d for d in dirnames if here / d != staging]
        for name in [*dirnames, *filenames]:
            path = here / name
            relative = path.relative_to(root).as_posix()
            if _ORTHANC_OWN.match(relative):
                continue
            info = path.lstat()
            found[relative] = (0, 0) if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return found


def changed_outside_staging(before: Snapshot, after: Snapshot) -> list[str]:
    return sorted({k for k in after if before.get(k) != after[k]} | (before.keys() - after.keys()))


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes actually allocated) of every file below ``path``."""
    apparent = allocated = 0
    for directory, _, filenames in os.walk(path):
        for name in filenames:
            info = (Path(directory) / name).lstat()
            apparent += info.st_size
            allocated += info.st_blocks * 512
    return apparent, allocated


def _status_bytes(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024       # the kernel counts in kB
    raise KeyError(key)


class PeakRss:
    """Peak resident memory of a process during a block, above its level at the start.

    The kernel's high-water mark is reset at the start (``clear_refs``) and a sampler
    also polls ``VmRSS``, so a short spike that is freed at once is still seen.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.peak = self.after = 0
        self._hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, _status_bytes(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            self._stop.wait(0.002)

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._hwm_reset = True
        except OSError:
            pass
        self.baseline = self.peak = _status_bytes(self.pid, "VmRSS")
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.after = _status_bytes(self.pid, "VmRSS")
        if self._hwm_reset:
            self.peak = max(self.peak, _status_bytes(self.pid, "VmHWM"))

    @property
    def growth(self) -> int:
        return max(self.peak, self.after) - self.baseline


def assert_servers_sound(servers: tuple[OrthancServer, ...], logs: dict[str, LogWatch],
                         before: dict[str, Snapshot], findings: Findings) -> None:
    """After a property: healthy, no traceback logged, nothing written outside staging."""
    for server in servers:
        if not alive(server):
            findings.add(f"Orthanc {server.name} is not healthy after the run",
                         "GET /system")
        for line in logs[server.name].new_errors():
            findings.add(f"Orthanc {server.name} logged a Python error", line)
        for path in changed_outside_staging(before[server.name], snapshot(server)):
            findings.add(f"Orthanc {server.name}: written outside {STAGING}", path)
