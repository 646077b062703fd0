"""Real Orthanc servers for tests, the demo and the benchmark.

:class:`OrthancServer` runs ``/usr/sbin/Orthanc`` on free loopback ports with a
temporary storage directory and the plugin loaded; :func:`start_cluster` starts several
that know each other as peers. Servers are always stopped by PID (SIGTERM, then
SIGKILL after a deadline) and their log stays readable for failure reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import urllib3

REPO = Path(__file__).resolve().parent.parent
PLUGIN_SCRIPT = REPO / "plugin" / "transfers.py"
ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc")
PYTHON_PLUGIN = os.environ.get("ORTHANC_PYTHON_PLUGIN",
                               "/usr/share/orthanc/plugins/libOrthancPython.so")
DICOMWEB_PLUGIN = os.environ.get("ORTHANC_DICOMWEB_PLUGIN",
                                 "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: ``TRANSFERS_ALLOW_THREADS=1`` runs every server with the Python plugin's
#: ``"Python": {"AllowThreads": true}`` (plugin 4.3+; 4.0 ignores it): CI runs the suite on
#: Debian 13 both ways, since the README recommends turning it on.
ALLOW_THREADS = os.environ.get("TRANSFERS_ALLOW_THREADS") == "1"


class WaitTimeout(AssertionError):
    """A condition was not met in time; the message carries the last observed state."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """Poll until ``predicate`` returns something truthy; raise with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def wait_stored_while_transferring(runner: OrthancServer, job_id: str,
                                   receiver: OrthancServer, timeout: float = 30.0) -> None:
    """Wait until ``receiver`` stores an instance while the transfer job ``job_id`` (on
    ``runner``) is still moving buckets: what ImportDuringTransfer promises."""
    def stored_while_transferring() -> bool:
        job = runner.get_json(f"/jobs/{job_id}")
        if job["State"] not in ("Pending", "Running"):
            raise WaitTimeout(f"job {job_id} ended first: {job}")
        return job["Content"]["Phase"] == "Transfer" and bool(receiver.get_json("/instances"))

    wait_for(stored_while_transferring, timeout, "an instance stored while buckets move")


_HANDED_OUT: set[int] = set()
_PORTS_LOCK = threading.Lock()


def free_port() -> int:
    """A free loopback port never handed out before in this process: the kernel may give
    the same free port twice to servers that have not bound theirs yet (seen once: two
    servers of a cluster on one HTTP port, the second one's readiness probe answered by
    the first)."""
    with _PORTS_LOCK:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port: int = s.getsockname()[1]
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class OrthancServer:
    """One Orthanc process. ``config`` is merged over sensible test defaults."""

    def __init__(self, name: str, *, config: dict[str, Any] | None = None,
                 plugin: bool = True, dicomweb: bool = False,
                 workdir: Path | None = None, http_port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.http_port = http_port or free_port()
        self.dicom_port = free_port()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"orthanc-{name}-"))
        self.storage = self.workdir / "storage"
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"
        plugins = [PYTHON_PLUGIN] if plugin else []
        if dicomweb:
            plugins.append(DICOMWEB_PLUGIN)
        self.config: dict[str, Any] = {
            "Name": name,
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": name.upper()[:16],
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": plugins,
            "PythonScript": str(PLUGIN_SCRIPT),
            "PythonVerbose": False,
            "StableAge": 2,
            "Transfers": {"MaxHttpRetries": 2, "HttpRetryBackoff": 0.2},
        }
        if ALLOW_THREADS:
            self.config["Python"] = {"AllowThreads": True}
        for key, value in (config or {}).items():
            if isinstance(value, dict) and isinstance(self.config.get(key), dict):
                self.config[key] = {**self.config[key], **value}
            else:
                self.config[key] = value
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()
        self.session.headers["Accept-Encoding"] = "identity"
        # Orthanc closes an idle keep-alive connection after KeepAliveTimeout (1 s): a
        # request sent on it at that moment meets "Remote end closed connection without
        # response". A GET is safe to send again; nothing else is retried.
        stale = urllib3.util.Retry(total=2, connect=0, read=2, status=0, redirect=0,
                                   allowed_methods=frozenset({"GET"}))
        self.session.mount("http://", requests.adapters.HTTPAdapter(max_retries=stale))

    @property
    def url(self) -> str:
        scheme = "https" if self.config.get("SslEnabled") else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    # -- process ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> OrthancServer:
        users = self.config.get("RegisteredUsers") or {}
        if self.config.get("AuthenticationEnabled") and users and self.session.auth is None:
            self.session.auth = next(iter(users.items()))     # the harness acts as a user
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        log = open(self.log_path, "ab")   # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen([ORTHANC_BINARY, str(self.config_path)],
                                        stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir, start_new_session=True,
                                        env=self.env)
        log.close()
        try:
            wait_for(self._ready, timeout, f"Orthanc {self.name} to answer /system")
        except WaitTimeout:
            self.stop()
            raise WaitTimeout(f"Orthanc {self.name} did not start:\n{self.log_tail()}") from None
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with code {self.process.returncode}")
        answer = self.session.get(self.url + "/system", timeout=2)
        # The server on this port must be this one, not another that holds the port.
        return answer.status_code == 200 and answer.json().get("Name") == self.config.get("Name")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                raise WaitTimeout(
                    f"Orthanc {self.name} hung on shutdown:\n{self.log_tail()}") from None
        self.session.close()
        return process.returncode

    def kill(self) -> None:
        """``kill -9``: the crash case."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> OrthancServer:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    # -- REST -------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def get_json(self, path: str) -> Any:
        response = self.get(path)
        response.raise_for_status()
        return response.json()

    def upload(self, files: Iterable[bytes]) -> list[str]:
        """Store DICOM files; returns their instance IDs."""
        ids = []
        for data in files:
            response = self.post("/instances", data=data,
                                 headers={"Content-Type": "application/dicom"})
            response.raise_for_status()
            ids.append(response.json()["ID"])
        return ids

    def instance_md5s(self) -> dict[str, str]:
        """MD5 of every stored instance, computed from the bytes Orthanc serves."""
        return {instance_id: md5_hex(self.get(f"/instances/{instance_id}/file").content)
                for instance_id in self.get_json("/instances")}

    def metric(self, name: str) -> float:
        """A value of ``/tools/metrics-prometheus`` (0 when absent)."""
        for line in self.get("/tools/metrics-prometheus").text.splitlines():
            parts = line.split()
            if parts and parts[0] == name:
                return float(parts[1])
        return 0.0

    def wipe(self) -> None:
        for patient in self.get_json("/patients"):
            self.request("DELETE", f"/patients/{patient}")

    def wait_job(self, job_id: str, timeout: float = 120.0,
                 states: tuple[str, ...] = ("Success", "Failure")) -> dict[str, Any]:
        """Poll ``/jobs/{id}`` until its state is one of ``states``; return the job."""
        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = self.get_json(f"/jobs/{job_id}")
            return job if job["State"] in states else None

        result: dict[str, Any] = wait_for(finished, timeout, f"job {job_id} to reach {states}",
                                          interval=0.1)
        return result


def resources(level: str, *ids: str) -> list[dict[str, str]]:
    """A ``Resources`` list of one level."""
    return [{"Level": level, "ID": i} for i in ids]


def start_cluster(names: list[str], *, config: dict[str, Any] | None = None,
                  per_server: dict[str, dict[str, Any]] | None = None,
                  remote_self: bool = False, **options: Any) -> list[OrthancServer]:
    """Start servers that declare each other in ``OrthancPeers`` (by name).

    With ``remote_self`` every peer entry carries ``RemoteSelf`` (pull-mode send).
    """
    servers = [OrthancServer(name, config=config, **options) for name in names]
    for server in servers:
        peers = {}
        for other in servers:
            if other is server:
                continue
            entry: dict[str, Any] = {"Url": other.url + "/"}
            if remote_self:
                entry["RemoteSelf"] = server.name
            peers[other.name] = entry
        server.config["OrthancPeers"] = peers
        for key, value in (per_server or {}).get(server.name, {}).items():
            server.config[key] = value
    return start_all(servers)


def start_all(servers: list[OrthancServer]) -> list[OrthancServer]:
    """Start the servers in order; stop those already started if one fails."""
    started: list[OrthancServer] = []
    try:
        for server in servers:
            started.append(server.start())
    except BaseException:
        for server in started:
            server.cleanup()
        raise
    return servers


@contextlib.contextmanager
def cluster(names: list[str], **kwargs: Any) -> Iterator[list[OrthancServer]]:
    servers = start_cluster(names, **kwargs)
    try:
        yield servers
    finally:
        for server in servers:
            server.cleanup()
