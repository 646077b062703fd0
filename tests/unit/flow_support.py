"""What the flow tests share: tiny DICOM files, fake Orthancs running the plugin, waits.

Every Orthanc here is a :class:`FakeHost` with a real ``TransfersApp`` installed on it
(routes registered, started as Orthanc starts it); remote ones sit behind a
``devkit.scripted_peer.ScriptedPeer``. Buckets are 1 KiB, retries do not back off, and
imports go through ``FakeHost.store_dicom``, so a whole transfer takes milliseconds.
Nothing sleeps for a fixed time: :func:`wait_job` polls ``GET /jobs/{id}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fake_host import FakeHost
from orthanc_transfers.app import TransfersApp, install
from orthanc_transfers.hostapi import Response

#: Sizes of the study's files with 1 KiB buckets: two whole-file buckets, one file split
#: in two slices, three small files (900 bytes) grouped in one bucket: 5 buckets.
STUDY_SIZES = (1500, 1800, 3000, 300, 300, 300)
STUDY = "5a"
SERIES = "5e"
#: Plain bucket GETs of a source of ours (pattern of ScriptedPeer rules).
CHUNKS = r"/transfers/chunks/[.0-9a-f-]+"
#: Bucket PUTs and the transaction of a push receiver.
PUT_BUCKET = r"/transfers/push/[0-9a-f-]+/[0-9]+"
TRANSACTION = r"/transfers/push/[0-9a-f-]+"
COMMIT = r"/transfers/push/[0-9a-f-]+/commit"


def fake_dicom(seed: int, size: int) -> bytes:
    """``size`` bytes starting like a DICOM file, different for every seed."""
    body = bytes((seed * 31 + n * 7 + n // 251) % 256 for n in range(max(0, size - 4)))
    return (b"DICM" + body)[:size]


def instance_id(data: bytes) -> str:
    """FakeHost stores a file under the SHA-1 of its bytes, as the Orthanc ID."""
    return hashlib.sha1(data).hexdigest()


def add_study(host: FakeHost, sizes: tuple[int, ...] = STUDY_SIZES,
              seed: int = 0) -> dict[str, bytes]:
    """One study of one series; returns its files by instance ID."""
    files = {instance_id(data): data
             for data in (fake_dicom(seed + n, size) for n, size in enumerate(sizes))}
    host.add_study(STUDY, {SERIES: files})
    return files


def make_host(staging: Path, **transfers: Any) -> FakeHost:
    """A fake Orthanc whose plugin stages under ``staging``; ``transfers`` overrides.
    No retries and no waiting for a peer in an outage, unless a test asks for them."""
    options = {"ImportThroughHttp": False, "StagingDirectory": str(staging),
               "BucketSize": 1, "Threads": 2, "MaxHttpRetries": 0, "HttpRetryBackoff": 0,
               "OutageDeadline": 0, **transfers}
    return FakeHost(config={"Transfers": options})


@contextlib.contextmanager
def running(host: FakeHost) -> Iterator[TransfersApp]:
    """The plugin installed and started on ``host``; stopped (workers joined) at exit."""
    app = install(host)
    host.start()
    try:
        yield app
    finally:
        host.stop()


def body_of(response: Response) -> Any:
    body = response.body.decode() if isinstance(response.body, bytes) else response.body
    return json.loads(body)


def post(host: FakeHost, uri: str, value: Any, **headers: str) -> tuple[int, Any]:
    """POST a JSON body to the plugin's routes; the status and the decoded answer."""
    response = host.call("POST", uri, json.dumps(value), headers=headers)
    return response.status, body_of(response)


def transfer_query(peer: str, compression: str = "none", **extra: Any) -> dict[str, Any]:
    return {"Resources": [{"Level": "Study", "ID": STUDY}], "Peer": peer,
            "Compression": compression, **extra}


def start_job(host: FakeHost, uri: str, query: dict[str, Any]) -> str:
    status, answer = post(host, uri, query)
    assert status == 200, answer
    return str(answer["ID"])


def job(host: FakeHost, job_id: str) -> dict[str, Any]:
    response = host.call("GET", f"/jobs/{job_id}")
    assert response.status == 200, response.body
    value: dict[str, Any] = body_of(response)
    return value


def wait_job(host: FakeHost, job_id: str, *states: str, timeout: float = 10.0,
             phase: str | None = None) -> dict[str, Any]:
    """Poll the job until its State is one of ``states`` (and its Phase ``phase``)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = job(host, job_id)
        if seen["State"] in states and (phase is None or seen["Content"].get("Phase") == phase):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is not {states} {phase or ''} after "
                                 f"{timeout} s: {json.dumps(seen, indent=1)}")
        time.sleep(0.005)


def job_threads() -> list[str]:
    """Threads of transfer jobs still alive (runners and bucket workers)."""
    return [t.name for t in threading.enumerate() if t.name.startswith(("TF-JOB", "TF-PULL",
                                                                         "TF-PUSH"))]
