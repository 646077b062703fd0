"""The adapter to Orthanc: the only module that imports ``orthanc``.

:class:`OrthancHost` implements :class:`hostapi.Host`. It translates Orthanc's
exceptions into :mod:`.errors` in one method (``_call``), converts REST callbacks to
:class:`Request`/:class:`Response` values, and guards every ``orthanc.*`` call so that
none starts once Orthanc is stopping: a thread inside ``orthanc.*`` while Python is
finalized crashes Orthanc (python-plugin-notes §3). :class:`_LoopbackImports` is the
other way in: posting staged files to this Orthanc's own HTTP API
(:func:`capabilities.imports_through_http` says when, and why).
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orthanc

from .capabilities import Platform, import_threads, imports_through_http, releases_gil
from .errors import BadRequest, HostClosed, TransfersError, UnknownResource
from .hostapi import Handler, ImportRoute, ImportSettings, Request, Response
from .httpclient import HttpPools, Tls, TransportError

T = TypeVar("T")

#: Every callable handed to Orthanc, kept for the life of the interpreter. Python plugin
#: 4.3 and later release registered callbacks at finalization without holding the GIL:
#: a callback whose last reference is the plugin's (a closure, a bound method) is then
#: freed without the GIL and Orthanc dies (SIGSEGV or "PyThreadState_Get", exit 139 or
#: 134) at every stop and reset. A reference held here makes that release harmless; the
#: interpreter frees them itself, with the GIL, when it finalizes the module.
_KEPT_FOR_ORTHANC: list[Callable[..., Any]] = []

_BAD_REQUEST_CODES = {3, 5, 8, 12, 15, 28, 33}
_UNKNOWN_RESOURCE_CODES = {7, 13, 17}


class OrthancHost:
    def __init__(self) -> None:
        self._closed = False
        self._calls = 0
        self._idle = threading.Condition()
        self._started: list[Callable[[], None]] = []
        self._stopped: list[Callable[[], None]] = []
        self._listeners: list[Callable[[Any, Any, Any], None]] = []
        self._imports = _LoopbackImports(self, ImportSettings())
        # The Python plugin accepts one on-change callback per Orthanc: scripts that add
        # their own (e.g. forwarding stable studies) use add_change_listener().
        _register(orthanc.RegisterOnChangeCallback, self._on_change)

    # -- the guard --------------------------------------------------------------------

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        with self._idle:
            if self._closed:
                raise HostClosed("Orthanc is stopping")
            self._calls += 1
        try:
            return function(*args)
        except orthanc.OrthancException as e:
            code = int(e.args[0]) if e.args else -1
            text = str(e.args[1]) if len(e.args) > 1 else str(e)
            if code in _UNKNOWN_RESOURCE_CODES:
                raise UnknownResource(text) from None
            if code in _BAD_REQUEST_CODES:
                raise BadRequest(text) from None
            raise TransfersError(f"Orthanc error {code}: {text}") from None
        finally:
            with self._idle:
                self._calls -= 1
                self._idle.notify_all()

    def _close(self, timeout: float = 30.0) -> None:
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: self._calls == 0, timeout)

    # -- Host protocol ----------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(orthanc.GetConfiguration())
        return value

    def rest_get(self, uri: str) -> bytes:
        return bytes(self._call(orthanc.RestApiGet, uri))

    def rest_post(self, uri: str, body: bytes) -> bytes:
        return bytes(self._call(orthanc.RestApiPost, uri, body))

    def rest_delete(self, uri: str) -> None:
        self._call(orthanc.RestApiDelete, uri)

    def get_dicom(self, instance_id: str) -> bytes:
        return bytes(self._call(orthanc.GetDicomForInstance, instance_id))

    def store_dicom(self, dicom: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.rest_post("/instances", dicom))
        return answer

    def configure_imports(self, settings: ImportSettings) -> None:
        self._imports.close()
        self._imports = _LoopbackImports(self, settings)

    def store_file(self, path: Path) -> dict[str, Any]:
        return self._imports.store_file(path)

    def import_route(self) -> ImportRoute:
        return self._imports.route()

    def register_route(self, regex: str, handler: Handler) -> None:
        def callback(output: Any, uri: str, **request: Any) -> None:
            args = {k: urllib.parse.unquote_plus(v) for k, v in request.get("get", {}).items()}
            response = handler(Request(method=request["method"], uri=uri,
                                       groups=tuple(request.get("groups", ())), args=args,
                                       headers=request.get("headers", {}),
                                       body=request.get("body") or b""))
            _answer(output, response)

        _register(orthanc.RegisterRestCallback, regex, callback)

    def platform(self) -> Platform:
        def version(uri: str) -> str:
            try:
                return str(json.loads(self.rest_get(uri)).get("Version", ""))
            except TransfersError:
                return ""

        python_section = self.configuration().get("Python")
        return Platform(orthanc=version("/system"), python_plugin=version("/plugins/python"),
                        python=sys.version.split()[0],
                        stream_answers=hasattr(orthanc.RestOutput, "StartStreamAnswer"),
                        allow_threads=isinstance(python_section, dict)
                        and python_section.get("AllowThreads") is True)

    def extend_explorer(self, javascript: str) -> None:
        orthanc.ExtendOrthancExplorer(javascript)

    def set_metric(self, name: str, value: float) -> None:
        self._call(orthanc.SetMetricsValue, name, float(value), orthanc.MetricsType.DEFAULT)

    def log_info(self, message: str) -> None:
        orthanc.LogInfo(message)

    def log_warning(self, message: str) -> None:
        orthanc.LogWarning(message)

    def log_error(self, message: str) -> None:
        orthanc.LogError(message)

    def on_started(self, callback: Callable[[], None]) -> None:
        self._started.append(callback)

    def on_stopped(self, callback: Callable[[], None]) -> None:
        self._stopped.append(callback)

    def add_change_listener(self, listener: Callable[[Any, Any, Any], None]) -> None:
        """Also call ``listener(change_type, resource_type, resource_id)`` on every change."""
        self._listeners.append(listener)

    def _on_change(self, change: Any, level: Any, resource: Any) -> None:
        for listener in self._listeners:
            try:
                listener(change, level, resource)
            except Exception as e:   # a script's bug must not stop ours
                orthanc.LogError(f"Transfers: change listener failed: {e!r}")
        if change == orthanc.ChangeType.ORTHANC_STARTED:
            with self._idle:
                self._closed = False
            self._imports.adapt(releases_gil(self.platform()))
            for callback in self._started:
                callback()
        elif change == orthanc.ChangeType.ORTHANC_STOPPED:
            for callback in self._stopped:
                callback()
            self._imports.close()
            self._close()


class _LoopbackImports:
    """Imports through ``POST http://127.0.0.1:{HttpPort}/instances`` where that is the
    faster route, streamed from the staged file; falls back to ``RestApiPost`` for good
    (logged once) when the route turns out unusable (an authorization plugin...)."""

    def __init__(self, host: OrthancHost, settings: ImportSettings) -> None:
        configuration = host.configuration()
        self._host = host
        self._settings = settings
        self._usable = bool(configuration.get("HttpServerEnabled", True)
                            and not configuration.get("SslEnabled", False))
        self._releases_gil = False           # known once Orthanc has started
        self._url = f"http://127.0.0.1:{configuration.get('HttpPort', 8042)}/instances"
        users = configuration.get("RegisteredUsers") or {}
        self._auth = next(iter(users.items())) if users else None
        self._pools = HttpPools(import_threads(settings.commit_threads, True, True))
        self._lock = threading.Lock()        # guards _usable (the switch to RestApiPost)

    def adapt(self, releases_gil: bool) -> None:
        self._releases_gil = releases_gil

    def _through_http(self) -> bool:
        with self._lock:
            usable = self._usable
        return imports_through_http(self._settings.through_http, usable, self._releases_gil)

    def route(self) -> ImportRoute:
        http = self._through_http()
        return ImportRoute(self._url if http else "RestApiPost",
                           import_threads(self._settings.commit_threads, http, self._releases_gil))

    def store_file(self, path: Path) -> dict[str, Any]:
        """Over HTTP the file is streamed from disk, never held whole here."""
        if self._through_http():
            answer = self._post(path)
            if answer is not None:
                return answer
        return self._host.store_dicom(path.read_bytes())

    def _post(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as body:
                answer = self._pools.request(
                    "POST", self._url, body=body, auth=self._auth,
                    timeout=self._settings.timeout or None, tls=Tls(verify=False),
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
            switched, self._usable = self._usable, False
        if switched:                 # logged once, and not under the lock
            self._host.log_warning(f"Transfers: importing through {self._url} is not "
                                   f"possible ({reason}); using RestApiPost instead")

    def close(self) -> None:
        self._pools.close()


def _register(register: Callable[..., None], *args: Any) -> None:
    """``register(*args)``, keeping the callback (the last argument) alive."""
    _KEPT_FOR_ORTHANC.append(args[-1])
    register(*args)


def _answer(output: Any, response: Response) -> None:
    if response.status == 405:
        output.SendMethodNotAllowed(response.allowed_method)
        return
    for name, value in response.headers.items():
        output.SetHttpHeader(name, value)
    if response.status == 200:
        output.AnswerBuffer(response.body, response.content_type)
        return
    # No Content-Type of ours on errors: Orthanc gives them the one of its own errors
    # (none on 1.10, text/plain on 1.12), and one set here would be a second header.
    body = response.body.decode() if isinstance(response.body, bytes) else response.body
    try:
        output.SendHttpStatus(response.status, body, len(body.encode()))   # plugin 4.0 form
    except TypeError:
        output.SendHttpStatus(response.status, body.encode())              # plugin >= 4.2
