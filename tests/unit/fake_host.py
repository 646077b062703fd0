"""An in-memory stand-in for Orthanc, implementing ``orthanc_transfers.hostapi.Host``.

Kept out of the package on purpose (style anchors, "For this project"): the core is
tested against this fake, and the integration tests check the real adapter.

The resource tree is plain dictionaries: ``patients`` → studies, ``studies`` → series,
``series`` → instances, ``instances`` → DICOM bytes. The REST routes the core uses are
answered as Orthanc answers them; anything else raises ``UnknownResource`` (what
``host.py`` turns Orthanc's error 17 into).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orthanc_transfers.capabilities import Platform
from orthanc_transfers.errors import UnknownResource
from orthanc_transfers.hostapi import Handler

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
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- building the tree ------------------------------------------------------------

    def add_study(self, study_id: str, series: dict[str, dict[str, bytes]]) -> None:
        """One study: ``{series_id: {instance_id: dicom_bytes}}``."""
        self.studies[study_id] = sorted(series)
        for series_id, files in series.items():
            self.series[series_id] = sorted(files)
            self.instances.update(files)

    # -- Host -------------------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        return self.config

    def rest_get(self, uri: str) -> bytes:
        with self._lock:
            self.rest_calls.append(uri)
        parts = uri.strip("/").split("/")
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
        with self._lock:
            self.stored.append(dicom)
        return {"ID": hashlib.sha1(dicom).hexdigest(), "Status": "Success"}

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
