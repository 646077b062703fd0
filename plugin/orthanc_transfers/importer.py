"""Storing received files into this Orthanc.

Without the Python plugin's ``AllowThreads`` (plugin 4.0 has none; 4.3+ has it off by
default) every ``orthanc.RestApiPost`` holds the GIL, so imports from several threads
run one at a time (python-plugin-notes §3-4). Orthanc's own HTTP API has no such limit:
with ``ImportThroughHttp``, files are posted to this Orthanc's ``/instances`` over
loopback by ``max(CommitThreadsCount, 4)`` threads (1.5 times as fast here). With
``AllowThreads`` on, ``RestApiPost`` runs in parallel too, and on that many threads it is
faster still (350 against 300 instances/s, bench/plugin_probe.py): ``ImportThroughHttp``
left unset ("auto") then uses it. When the HTTP route cannot be used (an authorization
plugin, the HTTP server disabled, HTTPS, whose server crashes Orthanc 1.10.1 on Debian
12), the importer falls back to ``RestApiPost`` and says so in the log.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from .errors import BadRequest, TransfersError
from .hostapi import Host
from .httpclient import HttpPools, Tls, TransportError

#: Threads posting to this Orthanc's HTTP API (at least; CommitThreadsCount may add).
HTTP_IMPORT_THREADS = 4


class LocalImporter:
    def __init__(self, host: Host, configuration: dict[str, Any], *, enabled: bool | None,
                 threads: int, timeout: float) -> None:
        self._host = host
        self._requested = enabled            # None: auto, decided by adapt()
        self._enabled = bool(enabled is not False and configuration.get("HttpServerEnabled", True)
                             and not configuration.get("SslEnabled", False))
        self._parallel_rest = False          # RestApiPost runs in parallel (AllowThreads)
        self._rest_threads = threads
        self._http_threads = max(threads, HTTP_IMPORT_THREADS)
        scheme = "https" if configuration.get("SslEnabled") else "http"
        self._url = f"{scheme}://127.0.0.1:{configuration.get('HttpPort', 8042)}/instances"
        users = configuration.get("RegisteredUsers") or {}
        self._auth = next(iter(users.items())) if users else None
        self._timeout = timeout or None
        self._pools = HttpPools(self._http_threads)
        self._lock = threading.Lock()

    @property
    def through_http(self) -> bool:
        return self._enabled

    def adapt(self, releases_gil: bool) -> str:
        """Once Orthanc has started: whether its calls release the GIL (AllowThreads).
        Returns the import path, for the start-up log."""
        self._parallel_rest = releases_gil
        if self._requested is None and releases_gil:
            self._enabled = False
        path = f"through {self._url}" if self._enabled else "through RestApiPost"
        return f"imports {path} on {self.threads} thread(s)"

    @property
    def threads(self) -> int:
        """Imports to run at once: parallel only where Orthanc can take them in parallel."""
        return self._http_threads if self._enabled or self._parallel_rest else self._rest_threads

    def store_file(self, path: Path) -> dict[str, Any]:
        """Store a staged file; over HTTP it is streamed from disk, never held whole here."""
        if self._enabled:
            answer = self._post(path)
            if answer is not None:
                return answer
        return self._host.store_dicom(path.read_bytes())

    def _post(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as body:
                answer = self._pools.request(
                    "POST", self._url, body=body, auth=self._auth, timeout=self._timeout,
                    tls=Tls(verify=False),
                    headers={"Content-Type": "application/dicom", "Accept-Encoding": "identity",
                             "Content-Length": str(path.stat().st_size)})
        except TransportError as e:
            self._give_up(str(e))
            return None
        if answer.status == 200:
            value: dict[str, Any] = json.loads(answer.body)
            return value
        text = answer.body[:300].decode("utf-8", "replace")
        if answer.status in (400, 415):
            raise BadRequest(f"Orthanc refused a transferred file: {text}")
        if answer.status in (401, 403, 404, 405):
            self._give_up(f"HTTP {answer.status}")
            return None
        raise TransfersError(f"Orthanc answered HTTP {answer.status} to the import: {text}")

    def _give_up(self, reason: str) -> None:
        with self._lock:
            switched, self._enabled = self._enabled, False
        if switched:                 # logged once, and not under the lock
            self._host.log_warning(f"Transfers: importing through {self._url} is not "
                                   f"possible ({reason}); using RestApiPost instead")

    def close(self) -> None:
        self._pools.close()
