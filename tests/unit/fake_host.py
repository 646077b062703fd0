"""An in-memory stand-in for Orthanc, implementing ``orthanc_transfers.hostapi.Host``.

Kept out of the package on purpose (style anchors, "For this project"): the core is
tested against this fake, and the integration tests check the real adapter.

The resource tree is plain dictionaries: ``patients`` → studies, ``studies`` → series,
``series`` → instances, ``instances`` → DICOM bytes. The REST routes the core uses are
answered as Orthanc answers them; anything else raises ``UnknownResource`` (what
``host.py`` turns Orthanc's error 17 into). A stored instance joins ``instances``, as in
Orthanc. The core's own ``/jobs`` and ``/plugins`` are ``core_jobs`` and ``plugins``.

The routes the plugin registers are called with :meth:`FakeHost.call`, which matches them
as Orthanc does (``devkit.scripted_peer.dispatch``); :meth:`start` and :meth:`stop` send
what Orthanc sends as ``ORTHANC_STARTED`` and ``ORTHANC_STOPPED``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orthanc_transfers.capabilities import Platform
from orthanc_transfers.errors import UnknownResource
from orthanc_transfers.hostapi import Handler, ImportRoute, ImportSettings, Response

from devkit.scripted_peer import dispatch

_FOLDERS = {"patients": "Studies", "studies": "Series", "series": "Instances"}


@dataclass
class FakeHost:
    instances: dict[str, bytes] = field(default_factory=dict)
    patients: dict[str, list[str]] = field(default_factory=dict)
    studies: dict[str, list[str]] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: Orthanc's ``StoreMD5ForAttachments``: without it the md5 route is a 404.
    store_md5: bool = True
    #: When set, ``get_dicom`` signals ``loading`` and waits for this event.
    hold: threading.Event | None = None
    loading: threading.Event = field(default_factory=threading.Event)
    dicom_reads: dict[str, int] = field(default_factory=dict)
    rest_calls: list[str] = field(default_factory=list)
    stored: list[bytes] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    logs: list[tuple[str, str]] = field(default_factory=list)
    explorer_js: list[str] = field(default_factory=list)
    started_callbacks: list[Callable[[], None]] = field(default_factory=list)
    stopped_callbacks: list[Callable[[], None]] = field(default_factory=list)
    #: The core's own jobs (``GET /jobs``), and the actions posted to them.
    core_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    core_job_actions: list[str] = field(default_factory=list)
    #: ``GET /plugins`` of the core.
    plugins: list[str] = field(default_factory=lambda: ["python"])
    #: What the app asked of ``store_file``; the fake always stores as ``store_dicom``.
    import_settings: ImportSettings = field(default_factory=lambda: ImportSettings(
        commit_threads=2))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- building the tree ------------------------------------------------------------

    def add_study(self, study_id: str, series: dict[str, dict[str, bytes]]) -> None:
        """One study: ``{series_id: {instance_id: dicom_bytes}}``."""
        self.studies[study_id] = sorted(series)
        for series_id, files in series.items():
            self.series[series_id] = sorted(files)
            self.instances.update(files)

    def add_peer(self, name: str, url: str, **options: Any) -> None:
        """An entry of ``OrthancPeers`` in its object form (``RemoteSelf``...)."""
        self.config.setdefault("OrthancPeers", {})[name] = {"Url": url, **options}

    # -- as Orthanc drives the plugin -------------------------------------------------

    def call(self, method: str, uri: str, body: bytes | str = b"", *,
             headers: dict[str, str] | None = None,
             args: dict[str, str] | None = None) -> Response:
        """A request to the routes registered by the plugin (404 JSON if none matches)."""
        data = body.encode() if isinstance(body, str) else body
        return dispatch(self.routes, method, uri, args=args, headers=headers, body=data)

    def start(self) -> None:
        for callback in self.started_callbacks:
            callback()

    def stop(self) -> None:
        for callback in self.stopped_callbacks:
            callback()

    # -- Host -------------------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        return self.config

    def rest_get(self, uri: str) -> bytes:
        with self._lock:
            self.rest_calls.append(uri)
        if uri in ("/jobs", "/jobs?expand"):
            jobs = list(self.core_jobs.values()) if uri.endswith("expand") else list(self.core_jobs)
            return json.dumps(jobs).encode()
        if uri == "/plugins":
            return json.dumps(self.plugins).encode()
        parts = uri.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "jobs" and parts[1] in self.core_jobs:
            return json.dumps(self.core_jobs[parts[1]]).encode()
        if len(parts) == 2 and parts[0] in _FOLDERS:
            children = getattr(self, parts[0]).get(parts[1])
            if children is not None:
                return json.dumps({_FOLDERS[parts[0]]: children}).encode()
        if len(parts) == 5 and parts[0] == "instances" and parts[2:4] == ["attachments", "dicom"]:
            data = self.instances.get(parts[1])
            if data is not None and parts[4] == "size":
                return str(len(data)).encode()
            if data is not None and parts[4] == "md5" and self.store_md5:
                return hashlib.md5(data).hexdigest().encode()
        raise UnknownResource(f"Unknown resource: {uri}")

    def rest_post(self, uri: str, body: bytes) -> bytes:
        parts = uri.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "jobs" and parts[1] in self.core_jobs:
            with self._lock:
                self.core_job_actions.append(uri)
            return b"{}"
        raise UnknownResource(f"Unknown resource: {uri}")

    def rest_delete(self, uri: str) -> None:
        raise UnknownResource(f"Unknown resource: {uri}")

    def get_dicom(self, instance_id: str) -> bytes:
        with self._lock:
            self.dicom_reads[instance_id] = self.dicom_reads.get(instance_id, 0) + 1
        self.loading.set()
        if self.hold is not None and not self.hold.wait(10):
            raise AssertionError("FakeHost.get_dicom was held for more than 10 s")
        data = self.instances.get(instance_id)
        if data is None:
            raise UnknownResource(f"Unknown instance: {instance_id}")
        return data

    def store_dicom(self, dicom: bytes) -> dict[str, Any]:
        instance_id = hashlib.sha1(dicom).hexdigest()
        with self._lock:
            self.stored.append(dicom)
            self.instances.setdefault(instance_id, dicom)
        return {"ID": instance_id, "Status": "Success"}

    def configure_imports(self, settings: ImportSettings) -> None:
        self.import_settings = settings

    def store_file(self, path: Path) -> dict[str, Any]:
        return self.store_dicom(path.read_bytes())

    def import_route(self) -> ImportRoute:
        return ImportRoute("RestApiPost", self.import_settings.commit_threads)

    def register_route(self, regex: str, handler: Handler) -> None:
        self.routes[regex] = handler

    def platform(self) -> Platform:
        return Platform(orthanc="test", python_plugin="test", python="test")

    def extend_explorer(self, javascript: str) -> None:
        self.explorer_js.append(javascript)

    def set_metric(self, name: str, value: float) -> None:
        self.metrics[name] = value

    def log_info(self, message: str) -> None:
        self.logs.append(("info", message))

    def log_warning(self, message: str) -> None:
        self.logs.append(("warning", message))

    def log_error(self, message: str) -> None:
        self.logs.append(("error", message))

    def on_started(self, callback: Callable[[], None]) -> None:
        self.started_callbacks.append(callback)

    def on_stopped(self, callback: Callable[[], None]) -> None:
        self.stopped_callbacks.append(callback)
