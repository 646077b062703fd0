"""What the core needs from Orthanc, as a Protocol (implemented by ``host.py``).

The core never imports ``orthanc``: it receives a :class:`Host`. Tests of the core
pass a fake; the real adapter wraps the ``orthanc`` module. REST requests and answers
are plain values so that handlers are ordinary functions of a :class:`Request`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .capabilities import Platform


@dataclass(frozen=True)
class Request:
    method: str                                 # GET, POST, PUT or DELETE
    uri: str                                    # decoded path, without the query string
    groups: tuple[str, ...] = ()
    args: dict[str, str] = field(default_factory=dict)     # query (GET only), decoded
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    allowed_method: str = ""                    # set with status 405

    @classmethod
    def json(cls, value: Any, status: int = 200, pretty: bool = True) -> Response:
        text = json.dumps(value, indent=3) if pretty else json.dumps(value, separators=(",", ":"))
        return cls(status=status, body=text)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class ImportSettings:
    """How the plugin's options ask :meth:`Host.store_file` to import."""
    through_http: bool | None = None    # ImportThroughHttp; None: auto
    commit_threads: int = 1             # CommitThreadsCount
    timeout: float = 60.0               # HttpTimeout (s), 0: none


@dataclass(frozen=True)
class ImportRoute:
    """How :meth:`Host.store_file` imports now, and how many imports to run at once."""
    through: str                        # "RestApiPost" or the loopback URL
    threads: int

    def describe(self) -> str:
        return f"imports through {self.through} on {self.threads} thread(s)"


class Host(Protocol):
    """The Orthanc services the plugin uses. Errors come out as :mod:`.errors` types."""

    def configuration(self) -> dict[str, Any]:
        """Orthanc's live configuration (includes peers added through REST)."""
        ...

    def rest_get(self, uri: str) -> bytes:
        """GET on the core REST API (plugins skipped)."""
        ...

    def rest_post(self, uri: str, body: bytes) -> bytes: ...

    def rest_delete(self, uri: str) -> None: ...

    def get_dicom(self, instance_id: str) -> bytes:
        """The DICOM file of an instance as stored."""
        ...

    def store_dicom(self, dicom: bytes) -> dict[str, Any]:
        """``POST /instances``; returns Orthanc's answer (ID, Status...)."""
        ...

    def configure_imports(self, settings: ImportSettings) -> None:
        """How :meth:`store_file` should import (once, before Orthanc starts)."""
        ...

    def store_file(self, path: Path) -> dict[str, Any]:
        """Store a staged DICOM file, streamed from disk where Orthanc allows it;
        returns Orthanc's answer as :meth:`store_dicom` does."""
        ...

    def import_route(self) -> ImportRoute:
        """How :meth:`store_file` imports now (decided once Orthanc has started; it
        falls back to ``RestApiPost`` when the loopback route turns out unusable)."""
        ...

    def register_route(self, regex: str, handler: Handler) -> None: ...

    def platform(self) -> Platform:
        """The running Orthanc, Python plugin and Python (once Orthanc has started)."""
        ...

    def extend_explorer(self, javascript: str) -> None: ...

    def set_metric(self, name: str, value: float) -> None: ...

    def log_info(self, message: str) -> None: ...

    def log_warning(self, message: str) -> None: ...

    def log_error(self, message: str) -> None: ...

    def on_started(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once Orthanc is ready (database and REST usable)."""
        ...

    def on_stopped(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when Orthanc stops or resets; it must stop every worker."""
        ...
