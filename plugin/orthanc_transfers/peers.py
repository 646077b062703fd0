"""HTTP client for remote Orthanc peers, and the ``/transfers/peers`` probe.

Outgoing calls go through :mod:`.httpclient` (urllib3, which releases the GIL while
waiting), never through ``orthanc.HttpGet`` and co., which hold the GIL and deadlock
against Python routes (python-plugin-notes §3). Transport failures are translated into
the :mod:`.errors` tree in one place, :meth:`PeerClient.send`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .concurrency import run_parallel
from .config import PeerConfig, TransfersConfig
from .errors import (
    ORTHANC_CORRUPTED_FILE,
    PeerCertificateRefused,
    PeerCorruption,
    PeerError,
    PeerHttpError,
    PeerProtocolError,
    PeerUnreachable,
)
from .httpclient import CertificateRefused, HttpAnswer, HttpPools, Tls, TransportError
from .outage import OUTAGE_STATUSES

#: Peer status strings of ``GET /transfers/peers``; third-party clients match them exactly.
PEER_DISABLED = "disabled"
PEER_INSTALLED = "installed"
PEER_BIDIRECTIONAL = "bidirectional"
#: The name under which peers detect the accelerator in ``GET /plugins``.
PLUGIN_NAME = "transfers"


class PeerAnswer(HttpAnswer):
    def json(self, peer: str, uri: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise PeerProtocolError(f"Peer {peer} answered {uri} with invalid JSON",
                                    peer=peer, uri=uri, status=self.status) from e


class PeerClient:
    """Calls to one peer, with its URL, credentials, headers and certificates."""

    def __init__(self, peer: PeerConfig, config: TransfersConfig,
                 connections: HttpPools) -> None:
        """``connections`` are shared by all jobs; credentials, headers and certificates go
        with each request, so a peer changed by ``PUT /peers/{name}`` keeps working."""
        self.peer = peer
        self._config = config
        self._pools = connections

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
        try:
            answer = self._pools.request(method, self.url(uri), body=body, headers=all_headers,
                                         auth=self.peer.auth, timeout=self._timeout(timeout),
                                         tls=self._tls(), stop=stop)
        except CertificateRefused as e:
            raise PeerCertificateRefused(
                f"Peer {self.peer.name} refused on {method} {uri}: its certificate failed "
                f"verification: {e}", peer=self.peer.name, uri=uri) from e
        except TransportError as e:
            raise PeerUnreachable(f"Peer {self.peer.name} unreachable on {method} {uri}: {e}",
                                  peer=self.peer.name, uri=uri) from e
        if expect_ok and answer.status != 200:
            error = PeerCorruption if _says_corrupted(answer) else PeerHttpError
            raise error(
                f"Peer {self.peer.name} answered HTTP {answer.status} to {method} {uri}",
                peer=self.peer.name, uri=uri, status=answer.status,
                details=answer.body[:500].decode("utf-8", "replace"))
        return PeerAnswer(answer.status, answer.body, answer.headers, answer.cookies)

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

    def _tls(self) -> Tls:
        return Tls(verify=self._config.https_verify_peers,
                   ca_file=self._config.https_ca_certificates or None,
                   cert_file=self.peer.certificate_file or None,
                   key_file=self.peer.certificate_key_file or None)


def _says_corrupted(answer: HttpAnswer) -> bool:
    """A 400 whose Orthanc-style body says CorruptedFile: bytes we sent arrived damaged."""
    if answer.status != 400:
        return False
    try:
        return bool(json.loads(answer.body).get("OrthancStatus") == ORTHANC_CORRUPTED_FILE)
    except (ValueError, AttributeError):
        return False


#: Seconds a probe of a peer in an outage may take.
OUTAGE_PROBE_TIMEOUT = 10.0


def peer_answers(client: PeerClient) -> bool:
    """Is the peer back? Any answer of its own to ``GET /system`` (even a 401, which the
    next attempt will report) says so; none, or a gateway's 502-504, says not."""
    try:
        answer = client.send("GET", "/system", timeout=OUTAGE_PROBE_TIMEOUT, expect_ok=False)
    except PeerError:
        return False
    return answer.status not in OUTAGE_STATUSES


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
    statuses: dict[str, str] = {}

    def probe(peer: PeerConfig) -> list[PeerConfig]:
        statuses[peer.name] = probe_status(make_client(peer), timeout)
        return []

    run_parallel(peers, probe, min(32, max(1, len(peers))), lambda: None, "TF-DETECT")
    return {peer.name: statuses[peer.name] for peer in peers}
