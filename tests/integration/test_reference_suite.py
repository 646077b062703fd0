"""What Orthanc's public integration tests of the accelerator check, on this plugin.

These tests mirror the facts that the public reference suite (orthanc-tests,
``Plugins/Transfers/Run.py``, and the transfer part of ``NewTests/Concurrency``) asserts
about the original C++ plugin. They were written for this repository from a list of
those facts; no code or text of the reference suite is reused.

The servers are configured as the reference configures its own, as far as it matters to
transfers: HTTP authentication with one registered user (peers carry its credentials),
``OverwriteInstances``, ``HttpTimeout`` 2 s, and **no** ``Transfers`` section, so every
option of the plugin has its default. Each server declares four peers:

* ``peer``: another Orthanc, without the plugin (reported ``disabled``);
* ``transfers-simple``: the partner, no ``RemoteSelf`` (``/transfers/send`` pushes);
* ``transfers-bidirectional``: the partner, with ``RemoteSelf`` set to
  ``transfers-bidirectional`` (``/transfers/send`` asks the partner to pull);
* ``self``: the server itself.

In the reference the partner is the server itself (``itself`` below): the instance that
is pulled or pushed is then already stored there, and the reference still expects the
job to make one HTTP query for its one instance. The same scenarios run between two
servers too (``another-server``), where the instance really moves and MD5s are compared.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest

from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, resources, start_all
from devkit.pytest_servers import register, release

USER, PASSWORD = "alice", "orthanctest"
REFERENCE_OPTIONS: dict[str, Any] = {
    "AuthenticationEnabled": True,
    "RegisteredUsers": {USER: PASSWORD},
    "OverwriteInstances": True,
    "HttpTimeout": 2,
}


def reference_server(name: str, options: dict[str, Any], *, plugin: bool = True
                     ) -> OrthancServer:
    """A server with the given Orthanc options and the plugin's defaults (the harness's
    own ``Transfers`` settings removed)."""
    server = OrthancServer(name, config=options, plugin=plugin)
    del server.config["Transfers"]
    return server




def peer_entry(server: OrthancServer, host: str = "localhost", **extra: str) -> dict[str, str]:
    return {"Url": f"http://{host}:{server.http_port}/", "Username": USER,
            "Password": PASSWORD, **extra}


def reference_peers(server: OrthancServer, partner: OrthancServer,
                    plain: OrthancServer) -> dict[str, Any]:
    return {
        "peer": [f"http://127.0.0.1:{plain.http_port}/", USER, PASSWORD],
        "transfers-bidirectional": peer_entry(partner,
                                              RemoteSelf="transfers-bidirectional"),
        "transfers-simple": peer_entry(partner),
        "self": peer_entry(server, host="127.0.0.1"),
    }


@dataclass
class Topology:
    """``source`` holds the instance; ``receiver`` ends up storing it (may be the same)."""

    source: OrthancServer
    receiver: OrthancServer

    def wipe(self) -> None:
        self.source.wipe()
        self.receiver.wipe()


@pytest.fixture(scope="module")
def plain_peer() -> Iterator[OrthancServer]:
    """The reference's ``peer``: a second Orthanc, without the transfers plugin."""
    (plain,) = register(start_all([reference_server("peer", REFERENCE_OPTIONS, plugin=False)]))
    yield plain
    release([plain])


@pytest.fixture(scope="module", params=["itself", "another-server"])
def topology(request: pytest.FixtureRequest, plain_peer: OrthancServer) -> Iterator[Topology]:
    if request.param == "itself":
        server = reference_server("ref", REFERENCE_OPTIONS)
        server.config["OrthancPeers"] = reference_peers(server, server, plain_peer)
        servers = [server]
        pair = Topology(server, server)
    else:
        source = reference_server("source", REFERENCE_OPTIONS)
        receiver = reference_server("receiver", REFERENCE_OPTIONS)
        source.config["OrthancPeers"] = reference_peers(source, receiver, plain_peer)
        receiver.config["OrthancPeers"] = reference_peers(receiver, source, plain_peer)
        servers = [source, receiver]
        pair = Topology(source, receiver)
    started = register(start_all(servers))
    yield pair
    release(started)


@pytest.fixture(scope="module")
def one_ct() -> bytes:
    """One single-frame CT slice (about 0.5 MB): one bucket with the default BucketSize."""
    return dicom_data.ct_series(1, seed=11, patient_id="TF-REF-0001")[0]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def post_ok(server: OrthancServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = server.post(path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def transfer_body(peer: str, instance_id: str, priority: int) -> dict[str, Any]:
    return {"Compression": "gzip", "Peer": peer,
            "Resources": resources("Instance", instance_id), "Priority": priority}


def assert_one_instance_job(job: dict[str, Any], job_id: str, job_type: str, priority: int,
                            peer: str) -> None:
    """What the reference checks on every job of its single-instance scenarios."""
    assert job["Type"] == job_type
    assert job["State"] == "Success", json.dumps(job)
    assert job["ID"] == job_id
    assert job["Priority"] == priority
    content = job["Content"]
    assert content["Compression"] == "gzip"
    assert content["Peer"] == peer
    assert content["TotalInstances"] == 1
    assert content["CompletedHttpQueries"] == 1, json.dumps(content)


# -- GET /transfers/peers --------------------------------------------------------------


def test_peers_reports_each_configured_peer_with_its_status(topology: Topology,
                                                            plain_peer: OrthancServer) -> None:
    server = topology.source
    response = server.get("/transfers/peers")
    assert response.status_code == 200
    peers = response.json()
    assert len(peers) == 4
    assert peers["peer"] == "disabled"
    assert peers["transfers-simple"] == "installed"
    assert peers["transfers-bidirectional"] == "bidirectional"
    # What the statuses rest on: the plugin is listed as "transfers" in /plugins.
    assert "transfers" in server.get_json("/plugins")
    assert "transfers" not in plain_peer.get_json("/plugins")


# -- POST /transfers/pull --------------------------------------------------------------


def test_pull_of_one_instance_succeeds_in_one_http_query(topology: Topology,
                                                         one_ct: bytes) -> None:
    topology.wipe()
    (instance,) = topology.source.upload([one_ct])
    receiver = topology.receiver
    answer = post_ok(receiver, "/transfers/pull",
                     transfer_body("transfers-simple", instance, priority=10))
    job = receiver.wait_job(answer["ID"])
    assert_one_instance_job(job, answer["ID"], "PullTransfer", 10, "transfers-simple")
    assert receiver.instance_md5s() == {instance: md5(one_ct)}


# -- POST /transfers/send, push mode (peer without RemoteSelf) --------------------------


def test_push_send_of_one_instance_succeeds_in_one_http_query(topology: Topology,
                                                              one_ct: bytes) -> None:
    topology.wipe()
    source = topology.source
    (instance,) = source.upload([one_ct])
    answer = post_ok(source, "/transfers/send",
                     transfer_body("transfers-simple", instance, priority=-10))
    job = source.wait_job(answer["ID"])
    assert_one_instance_job(job, answer["ID"], "PushTransfer", -10, "transfers-simple")
    assert topology.receiver.instance_md5s() == {instance: md5(one_ct)}
    assert source.instance_md5s() == {instance: md5(one_ct)}


# -- POST /transfers/send, pull mode (peer with RemoteSelf) ------------------------------


def test_pull_mode_send_answers_the_remote_job_which_runs_at_priority_zero(
        topology: Topology, one_ct: bytes) -> None:
    topology.wipe()
    source, receiver = topology.source, topology.receiver
    (instance,) = source.upload([one_ct])
    answer = post_ok(source, "/transfers/send",
                     transfer_body("transfers-bidirectional", instance, priority=42))
    assert len(answer) == 3, answer
    assert answer["Peer"] == "transfers-bidirectional"
    assert "RemoteJob" in answer and "URL" in answer
    remote_job = answer["RemoteJob"]
    job = receiver.wait_job(remote_job)
    # The priority of the request is not forwarded: the remote job runs at 0.
    assert_one_instance_job(job, remote_job, "PullTransfer", 0, "transfers-bidirectional")
    assert receiver.instance_md5s() == {instance: md5(one_ct)}


# -- Several studies between two servers (the transfer part of NewTests/Concurrency) ------

#: Reference: two servers, no authentication, OverwriteInstances, no Transfers section;
#: both declare "a" (with RemoteSelf "b") and "b", so each declares itself too.
CONCURRENCY_OPTIONS: dict[str, Any] = {"OverwriteInstances": True}
STUDIES, SERIES_PER_STUDY, INSTANCES_PER_SERIES = 3, 2, 6


@pytest.fixture(scope="module")
def concurrency_pair() -> Iterator[tuple[OrthancServer, OrthancServer]]:
    a = reference_server("a", CONCURRENCY_OPTIONS)
    b = reference_server("b", CONCURRENCY_OPTIONS)
    peers = {"a": {"Url": f"{a.url}/", "RemoteSelf": "b"}, "b": {"Url": f"{b.url}/"}}
    for server in (a, b):
        server.config["OrthancPeers"] = peers
    started = register(start_all([a, b]))
    yield a, b
    release(started)


@pytest.fixture(scope="module")
def several_studies() -> list[bytes]:
    """Studies of two series each, small CT slices."""
    files: list[bytes] = []
    for study in range(STUDIES):
        patient = f"TF-REF-C{study}"
        first = dicom_data.ct_series(INSTANCES_PER_SERIES, rows=192, columns=192,
                                     seed=100 + study, patient_id=patient)
        study_uid = pydicom.dcmread(io.BytesIO(first[0])).StudyInstanceUID
        files += first
        for series in range(1, SERIES_PER_STUDY):
            files += dicom_data.ct_series(INSTANCES_PER_SERIES, rows=192, columns=192,
                                          seed=200 + 10 * study + series,
                                          patient_id=patient, study_uid=study_uid)
    return files


def statistics(server: OrthancServer) -> tuple[int, str]:
    stats = server.get_json("/statistics")
    return stats["CountInstances"], stats["TotalDiskSize"]


def assert_studies_alike(source: OrthancServer, receiver: OrthancServer) -> None:
    """Same instance count and disk size; per study, the same instances and the counts
    the receiver's database computes (instances, and two series)."""
    assert statistics(receiver) == statistics(source)
    studies = receiver.get_json("/studies")
    assert sorted(studies) == sorted(source.get_json("/studies"))
    assert len(studies) == STUDIES
    for study in studies:
        wanted = {i["ID"] for i in source.get_json(f"/studies/{study}/instances")}
        held = {i["ID"] for i in receiver.get_json(f"/studies/{study}/instances")}
        assert held == wanted
        counted = receiver.get_json(f"/studies/{study}/statistics")
        assert counted["CountInstances"] == len(wanted)
        assert counted["CountSeries"] == SERIES_PER_STUDY
    assert receiver.instance_md5s() == source.instance_md5s()


@pytest.mark.parametrize("compression", ["gzip", "none"])
@pytest.mark.parametrize("mode", ["push", "pull-mode"])
def test_send_of_several_studies_keeps_counts_and_disk_size(
        concurrency_pair: tuple[OrthancServer, OrthancServer], several_studies: list[bytes],
        mode: str, compression: str) -> None:
    """Push: a sends to b. Pull mode: b sends to a, which declares ``a`` with RemoteSelf,
    so a pulls, and the answer names a's job."""
    a, b = concurrency_pair
    a.wipe()
    b.wipe()
    sender, receiver, peer = (a, b, "b") if mode == "push" else (b, a, "a")
    sender.upload(several_studies)
    study_ids = sender.get_json("/studies")
    answer = post_ok(sender, "/transfers/send", {"Resources": resources("Study", *study_ids),
                                                 "Compression": compression, "Peer": peer})
    if mode == "push":
        assert "ID" in answer and "RemoteJob" not in answer
        job = sender.wait_job(answer["ID"])
    else:
        assert "RemoteJob" in answer and "URL" in answer
        job = receiver.wait_job(answer["RemoteJob"])
    assert job["State"] == "Success", json.dumps(job)
    assert_studies_alike(sender, receiver)
