"""HTTP client for remote Orthanc peers, and the ``/transfers/peers`` probe.

Outgoing calls go through ``requests`` (which releases the GIL while waiting), never
through ``orthanc.HttpGet`` and co., which hold the GIL and deadlock against Python
routes (python-plugin-notes §3). Every ``requests`` exception is translated into the
:mod:`.errors` tree in one place, :meth:`PeerClient.send`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
import requests.adapters

from .config import PeerConfig, TransfersConfig
from .errors import PeerError, PeerHttpError, PeerProtocolError, PeerUnreachable

#: Peer status strings of ``GET /transfers/peers``; third-party clients match them exactly.
PEER_DISABLED = "disabled"
PEER_INSTALLED = "installed"
PEER_BIDIRECTIONAL = "bidirectional"
#: The name under which peers detect the accelerator in ``GET /plugins``.
PLUGIN_NAME = "transfers"


@dataclass(frozen=True)
class PeerAnswer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: str = ""              # "name=value; name2=value2" from Set-Cookie

    def json(self, peer: str, uri: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise PeerProtocolError(f"Peer {peer} answered {uri} with invalid JSON",
                                    peer=peer, uri=uri, status=self.status) from e


class SessionPool:
    """One pooled ``requests.Session`` per peer name, shared by all jobs.

    Credentials, headers and certificates are passed on each request, so a peer whose
    configuration changes through ``PUT /peers/{name}`` keeps its pool.
    """

    def __init__(self, connections_per_peer: int) -> None:
        self._connections = connections_per_peer
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()

    def session(self, peer: PeerConfig) -> requests.Session:
        with self._lock:
            session = self._sessions.get(peer.name)
            if session is None:
                session = requests.Session()
                adapter = requests.adapters.HTTPAdapter(pool_connections=2,
                                                        pool_maxsize=self._connections)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._sessions[peer.name] = session
            return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


class PeerClient:
    """Calls to one peer, with its URL, credentials, headers and certificates."""

    def __init__(self, peer: PeerConfig, config: TransfersConfig, sessions: SessionPool) -> None:
        self.peer = peer
        self._config = config
        self._session = sessions.session(peer)

    def url(self, uri: str) -> str:
        return self.peer.url.rstrip("/") + uri

    def send(self, method: str, uri: str, *, body: bytes | None = None,
             headers: Mapping[str, str] | None = None, timeout: float | None = None,
             expect_ok: bool = True, stop: Callable[[], None] | None = None) -> PeerAnswer:
        """One HTTP request; transport failures and (with ``expect_ok``) non-200 raise.

        With ``stop``, the body goes out and the answer comes in by pieces, and ``stop``
        is called between pieces: a pause or cancel aborts a large bucket in flight
        instead of waiting for it (the connection is then dropped, not pooled).
        """
        all_headers = {"Accept-Encoding": "identity", **self.peer.http_headers, **(headers or {})}
        data: bytes | _StoppableBody | None = body
        if stop is not None and body:
            data = _StoppableBody(body, stop)
        try:
            response = self._session.request(
                method, self.url(uri), data=data, headers=all_headers,
                auth=self.peer.auth, timeout=self._timeout(timeout),
                verify=self._verify(), cert=self._cert(), allow_redirects=False,
                stream=stop is not None)
            content = response.content if stop is None else _read_stoppable(response, stop)
        except requests.RequestException as e:
            raise PeerUnreachable(f"Peer {self.peer.name} unreachable on {method} {uri}: "
                                  f"{type(e).__name__}: {e}", peer=self.peer.name, uri=uri) from e
        answer = PeerAnswer(response.status_code, content, response.headers,
                            "; ".join(f"{c.name}={c.value}" for c in response.cookies))
        if expect_ok and answer.status != 200:
            raise PeerHttpError(
                f"Peer {self.peer.name} answered HTTP {answer.status} to {method} {uri}",
                peer=self.peer.name, uri=uri, status=answer.status,
                details=content[:500].decode("utf-8", "replace"))
        return answer

    def get_json(self, uri: str, timeout: float | None = None) -> Any:
        return self.send("GET", uri, timeout=timeout).json(self.peer.name, uri)

    def post_json(self, uri: str, value: Any, *, headers: Mapping[str, str] | None = None,
                  timeout: float | None = None) -> Any:
        body = json.dumps(value).encode()
        answer = self.send("POST", uri, body=body, timeout=timeout,
                           headers={"Content-Type": "application/json", **(headers or {})})
        return answer.json(self.peer.name, uri)

    def _timeout(self, timeout: float | None) -> float | None:
        value = timeout or self.peer.timeout or self._config.http_timeout
        return value or None

    def _verify(self) -> bool | str:
        if not self._config.https_verify_peers:
            return False
        return self._config.https_ca_certificates or True

    def _cert(self) -> tuple[str, str] | str | None:
        if self.peer.certificate_file and self.peer.certificate_key_file:
            return (self.peer.certificate_file, self.peer.certificate_key_file)
        return self.peer.certificate_file


#: Pieces in which stoppable bodies are sent and answers read.
PIECE = 256 * 1024


class _StoppableBody:
    """A request body that ``requests`` reads by pieces, checking ``stop`` before each."""

    def __init__(self, data: bytes, stop: Callable[[], None]) -> None:
        self._view = memoryview(data)
        self._position = 0
        self._stop = stop

    def __len__(self) -> int:          # gives requests a Content-Length
        return len(self._view) - self._position

    def read(self, size: int = -1) -> bytes:
        self._stop()
        end = len(self._view)
        if size >= 0:
            end = min(end, self._position + max(size, PIECE))
        piece = bytes(self._view[self._position:end])
        self._position = end
        return piece


def _read_stoppable(response: requests.Response, stop: Callable[[], None]) -> bytes:
    parts = []
    try:
        for piece in response.iter_content(PIECE):
            stop()
            parts.append(piece)
    except BaseException:
        response.close()
        raise
    return b"".join(parts)


def probe_status(client: PeerClient, timeout: float) -> str:
    """``GET {peer}/plugins`` and classify the answer (reference §3.4)."""
    try:
        plugins = client.get_json("/plugins", timeout=timeout)
    except PeerError:
        return PEER_DISABLED
    if not isinstance(plugins, list) or PLUGIN_NAME not in plugins:
        return PEER_DISABLED
    return PEER_BIDIRECTIONAL if client.peer.remote_self else PEER_INSTALLED


def probe_peers(peers: list[PeerConfig], make_client: Callable[[PeerConfig], PeerClient],
                timeout: float) -> dict[str, str]:
    """Probe every peer at once and independently: one dead peer never hides another."""
    if not peers:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(peers)),
                            thread_name_prefix="TF-DETECT") as pool:
        futures = {peer.name: pool.submit(probe_status, make_client(peer), timeout)
                   for peer in peers}
        return {name: future.result() for name, future in futures.items()}
