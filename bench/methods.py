"""The ways of moving a study from the source to the target, each ending in a job.

Every method is started asynchronously and followed on ``/jobs/{id}`` of the server
that runs it, so all methods are timed the same way (request to ``Success`` seen by a
20 ms poll). Orthanc's own methods run on the source: ``peers-store``
(``/peers/{peer}/store``) and ``stow`` (the DICOMweb plugin's STOW-RS client). Ours:
``push-*`` (``/transfers/send`` on the source, peer without ``RemoteSelf``) and
``pull-*`` (``/transfers/pull`` on the target); ``*-during`` ask for
``ImportDuringTransfer`` (each instance imported once verified, not all at the end).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devkit.orthanc_server import OrthancServer

from .topology import SOURCE, TARGET, Pair

POLL_INTERVAL = 0.02


class Unavailable(Exception):
    """The method cannot run on this installation (reported as n/a, with the reason)."""


class JobTimeout(Exception):
    pass


@dataclass(frozen=True)
class Started:
    server: OrthancServer        # where the job runs
    job_id: str


@dataclass(frozen=True)
class Method:
    name: str
    start: Callable[[Pair, str], Started]
    #: (side, Prometheus metric) counting our payload bytes, for links without a proxy
    payload_metric: tuple[str, str] | None = None


def _answer(response: Any, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


def _peers_store(pair: Pair, study: str) -> Started:
    answer = _answer(pair.source.post(f"/peers/{TARGET}/store",
                                      json={"Resources": [study], "Synchronous": False}),
                     "/peers/store")
    return Started(pair.source, answer["ID"])


def _stow(pair: Pair, study: str) -> Started:
    if "dicom-web" not in pair.source.get_json("/plugins"):
        raise Unavailable("the DICOMweb plugin is not loaded")
    response = pair.source.post(f"/dicom-web/servers/{TARGET}/stow",
                                json={"Resources": [study], "Synchronous": False})
    if response.status_code in (404, 405):
        raise Unavailable(f"no STOW-RS client route (HTTP {response.status_code})")
    return Started(pair.source, _answer(response, "STOW-RS")["ID"])


def _query(peer: str, study: str, compression: str, during: bool) -> dict[str, Any]:
    query: dict[str, Any] = {"Resources": [{"Level": "Study", "ID": study}], "Peer": peer,
                             "Compression": compression}
    if during:
        query["ImportDuringTransfer"] = True
    return query


def _push(compression: str, during: bool = False) -> Callable[[Pair, str], Started]:
    def start(pair: Pair, study: str) -> Started:
        answer = _answer(pair.source.post("/transfers/send",
                                          json=_query(TARGET, study, compression, during)),
                         "/transfers/send")
        if "ID" not in answer:
            raise RuntimeError(f"/transfers/send did not start a push job: {answer}")
        return Started(pair.source, answer["ID"])
    return start


def _pull(compression: str, during: bool = False) -> Callable[[Pair, str], Started]:
    def start(pair: Pair, study: str) -> Started:
        answer = _answer(pair.target.post("/transfers/pull",
                                          json=_query(SOURCE, study, compression, during)),
                         "/transfers/pull")
        return Started(pair.target, answer["ID"])
    return start


PUSH_METRIC = ("src", "orthanc_transfers_push_sent_bytes")
PULL_METRIC = ("dst", "orthanc_transfers_pull_received_bytes")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("peers-store", _peers_store),
    Method("stow", _stow),
    Method("push-gzip", _push("gzip"), PUSH_METRIC),
    Method("push-none", _push("none"), PUSH_METRIC),
    Method("pull-gzip", _pull("gzip"), PULL_METRIC),
    Method("pull-none", _pull("none"), PULL_METRIC),
    Method("push-gzip-during", _push("gzip", during=True), PUSH_METRIC),
    Method("pull-gzip-during", _pull("gzip", during=True), PULL_METRIC),
)}


def wait_job(server: OrthancServer, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll ``/jobs/{id}`` every 20 ms until Success or Failure."""
    deadline = time.monotonic() + timeout
    while True:
        response = server.get(f"/jobs/{job_id}", timeout=30)
        if response.status_code == 200:
            job: dict[str, Any] = response.json()
            if job.get("State") in ("Success", "Failure"):
                return job
        if time.monotonic() > deadline:
            raise JobTimeout(f"job {job_id} not finished after {timeout:.0f} s "
                             f"(last answer: HTTP {response.status_code} {response.text[:200]})")
        time.sleep(POLL_INTERVAL)
