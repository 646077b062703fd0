"""Outgoing HTTP for the plugin: pooled connections on ``urllib3``, without ``requests``.

Why not ``requests``: Orthanc's ``/tools/reset`` finalizes the embedded interpreter and
imports the script again in the same process, and Debian 13's ``charset_normalizer``
(compiled with mypyc, imported by ``requests``) cannot be initialised twice: the reset
then kills Orthanc. ``urllib3``, on which ``requests`` is built, is pure Python and
survives a reset; it also releases the GIL while waiting, as the plugin needs (never
``orthanc.HttpGet`` and co.: python-plugin-notes §3). This module works with the urllib3
of Debian 12 (1.26) and of Debian 13 (2.x).

Every transport failure comes out as :class:`TransportError`, in one place.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import urllib3
import urllib3.exceptions

#: Pieces in which stoppable bodies are sent and answers read.
PIECE = 256 * 1024


class TransportError(Exception):
    """No HTTP answer: refused, reset, timed out, TLS failure, broken answer..."""


class CertificateRefused(TransportError):
    """The server's TLS certificate failed verification (not a transient failure)."""


@dataclass(frozen=True)
class Tls:
    """How an HTTPS peer is checked, and the client certificate shown to it."""
    verify: bool = True
    ca_file: str | None = None          # None: the system's certificate store
    cert_file: str | None = None
    key_file: str | None = None

    def pool_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if self.verify else "CERT_NONE",
                                    "cert_file": self.cert_file, "key_file": self.key_file}
        if self.verify:
            settings["ca_certs"] = self.ca_file
        else:
            settings["assert_hostname"] = False
        return settings


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: str = ""              # "name=value; name2=value2" from Set-Cookie


class HttpPools:
    """Keep-alive connections, pooled per host, scheme, port and TLS settings.

    A peer whose settings change (``PUT /peers/{name}``) gets a new pool on its next
    request. Thread-safe: urllib3's pool manager has its own lock; ``close`` is guarded
    by ours so that no request starts a pool after it.
    """

    def __init__(self, connections_per_host: int) -> None:
        self._manager = urllib3.PoolManager(num_pools=32, maxsize=connections_per_host)
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, body: bytes | BinaryIO | None = None,
                headers: Mapping[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                tls: Tls | None = None, stop: Callable[[], None] | None = None) -> HttpAnswer:
        """One request, no redirect, no retry (retries are the caller's policy).

        With ``stop``, the body goes out and the answer comes in by pieces, and ``stop``
        is called between them: a pause or cancel aborts a large body in flight instead
        of waiting for it (the connection is then dropped, not pooled).
        """
        all_headers = dict(headers or {})
        if auth is not None:
            all_headers.update(urllib3.util.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
        data: Any = body
        if isinstance(body, bytes):
            all_headers["Content-Length"] = str(len(body))
            if stop is not None:
                data = _StoppableBody(body, stop)
        try:
            settings = (tls or Tls()).pool_settings() if url.startswith("https:") else {}
            with self._lock:
                pool = self._manager.connection_from_url(url, pool_kwargs=settings)
            # enforce_content_length: an answer cut short by a reset is a transport
            # failure (the default of urllib3 2.x; urllib3 1.26 returns the short body).
            response = pool.urlopen(method, _path_of(url), body=data, headers=all_headers,
                                    timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                    retries=False, redirect=False, preload_content=False,
                                    assert_same_host=False, enforce_content_length=True)
            content = _read(response, stop)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as e:
            failure = CertificateRefused if _certificate_refused(e) else TransportError
            raise failure(f"{type(e).__name__}: {e}") from e
        return HttpAnswer(response.status, content, response.headers, _cookies(response))

    def close(self) -> None:
        with self._lock:
            self._manager.clear()


def _certificate_refused(error: BaseException) -> bool:
    """Does a certificate verification failure lie somewhere in ``error``'s chain?"""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) \
                or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        reason = getattr(seen, "reason", None)
        seen = seen.__cause__ or seen.__context__ or \
            (reason if isinstance(reason, BaseException) else None)
    return False


def _path_of(url: str) -> str:
    parsed = urllib3.util.parse_url(url)
    return parsed.request_uri


def _read(response: Any, stop: Callable[[], None] | None) -> bytes:
    """The whole answer; the connection goes back to the pool only once it is read."""
    try:
        parts = []
        for piece in response.stream(PIECE, decode_content=True):
            if stop is not None:
                stop()
            parts.append(piece)
    except BaseException:
        response.close()            # half-read: the connection cannot be reused
        raise
    response.release_conn()
    return b"".join(parts)


def _cookies(response: Any) -> str:
    """``name=value`` pairs of the answer's Set-Cookie headers (replayed by push jobs)."""
    values = response.headers.getlist("Set-Cookie")
    return "; ".join(value.split(";", 1)[0].strip() for value in values)


class _StoppableBody:
    """A request body read by pieces, checking ``stop`` before each."""

    def __init__(self, data: bytes, stop: Callable[[], None]) -> None:
        self._view = memoryview(data)
        self._position = 0
        self._stop = stop

    def read(self, size: int = -1) -> bytes:
        self._stop()
        end = len(self._view)
        if size >= 0:
            end = min(end, self._position + max(size, PIECE))
        piece = bytes(self._view[self._position:end])
        self._position = end
        return piece
