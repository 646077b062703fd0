"""Every route the plugin registers, called as Orthanc calls it (reference §3): answers,
and errors that are always Orthanc-style JSON with the right status, never a traceback."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_host import FakeHost
from flow_support import (
    STUDY,
    add_study,
    body_of,
    make_host,
    post,
    running,
    start_job,
    transfer_query,
    wait_job,
)
from orthanc_transfers.app import TransfersApp
from orthanc_transfers.hostapi import Response

from devkit.scripted_peer import Reply, Rule, ScriptedPeer, json_reply

pytestmark = pytest.mark.timeout(30)

UNKNOWN_TX = "/transfers/push/0123abcd"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FakeHost]:
    host = make_host(tmp_path / "orthanc")
    host.add_peer("nowhere", "http://127.0.0.1:9/")
    with running(host):
        yield host


def assert_json_error(response: Response, status: int) -> dict[str, Any]:
    assert response.status == status, response.body
    text = response.body if isinstance(response.body, str) else response.body.decode()
    assert "Traceback" not in text
    error: dict[str, Any] = json.loads(text)
    assert error["HttpStatus"] == status and error["Message"] and error["Details"]
    return error


def query_with(**changes: Any) -> str:
    value = {**transfer_query("nowhere"), **changes}
    return json.dumps({k: v for k, v in value.items() if v is not None})


# (method, uri, body, headers, args, status)
ERRORS: list[tuple[str, str, str, dict[str, str], dict[str, str], int]] = [
    *[("POST", uri, body, {}, {}, 400)
      for uri in ("/transfers/pull", "/transfers/send")
      for body in ("", "{not json", "[]", "[" * 40 + "]" * 40,
                   query_with(Resources=None), query_with(Resources=[]),
                   query_with(Resources=[{"Level": "Galaxy", "ID": "5a"}]),
                   query_with(Resources=[{"Level": "Study", "ID": "not hex!"}]),
                   query_with(Compression="zip"), query_with(Compression=None),
                   query_with(Peer=""), query_with(Peer=7), query_with(Priority="high"),
                   query_with(Priority=True), query_with(Originator=3),
                   query_with(SenderTransferID="\n"),
                   query_with(ImportDuringTransfer="yes"))],
    ("POST", "/transfers/pull", query_with(Peer="stranger"), {}, {}, 404),
    ("POST", "/transfers/send", query_with(Peer="stranger"), {}, {}, 404),
    ("POST", "/transfers/lookup", "{}", {}, {}, 400),
    ("POST", "/transfers/lookup", "", {}, {}, 400),
    ("POST", "/transfers/lookup", '[{"Level": "Study"}]', {}, {}, 400),
    ("POST", "/transfers/lookup", '[{"Level": "Study", "ID": "ffff"}]', {}, {}, 404),
    ("POST", "/transfers/lookup", '[{"Level": "Instance", "ID": "ffff"}]', {}, {}, 404),
    ("GET", "/transfers/chunks/ffff", "", {}, {}, 404),
    ("GET", "/transfers/chunks/a..b", "", {}, {}, 400),
    ("GET", "/transfers/chunks/ffff", "", {}, {"offset": "-1"}, 400),
    ("GET", "/transfers/chunks/ffff", "", {}, {"size": "99999999999"}, 400),
    ("GET", "/transfers/chunks/ffff", "", {}, {"compression": "brotli"}, 400),
    ("GET", "/transfers/chunks/ffff", "", {}, {"level": "42"}, 400),
    ("POST", "/transfers/push", "", {}, {}, 400),
    ("POST", "/transfers/push", "{}", {}, {}, 400),
    ("POST", "/transfers/push", '{"Instances": [], "Buckets": {}, "Compression": "none"}',
     {}, {}, 400),
    ("GET", UNKNOWN_TX, "", {}, {}, 404),
    ("DELETE", UNKNOWN_TX, "", {}, {}, 404),
    ("PUT", f"{UNKNOWN_TX}/0", "data", {}, {}, 404),
    ("POST", f"{UNKNOWN_TX}/commit", "", {}, {}, 404),
    ("POST", f"{UNKNOWN_TX}/commit", "", {"X-Transfers-Commit-Wait": "soon"}, {}, 400),
    ("POST", f"{UNKNOWN_TX}/commit", "", {"X-Transfers-Commit-Wait": "-1"}, {}, 400),
    ("POST", f"{UNKNOWN_TX}/commit", "", {"X-Transfers-Commit-Wait": "inf"}, {}, 400),
    ("POST", f"{UNKNOWN_TX}/0", "", {}, {}, 404),
    ("GET", "/jobs/0123-4567", "", {}, {}, 404),
    ("POST", "/jobs/0123-4567/pause", "", {}, {}, 404),
]


@pytest.mark.parametrize(("method", "uri", "body", "headers", "args", "status"), ERRORS,
                         ids=[f"{e[0]} {e[1]} {e[5]}" for e in ERRORS])
def test_errors_are_json_with_their_status(host: FakeHost, method: str, uri: str, body: str,
                                           headers: dict[str, str], args: dict[str, str],
                                           status: int) -> None:
    error = assert_json_error(host.call(method, uri, body, headers=headers, args=args), status)
    assert (error["Method"], error["Uri"]) == (method, uri)


@pytest.mark.parametrize(("method", "uri", "allowed"), [
    ("DELETE", "/transfers/pull", "POST"), ("GET", "/transfers/send", "POST"),
    ("GET", "/transfers/lookup", "POST"), ("POST", "/transfers/chunks/ffff", "GET"),
    ("POST", "/transfers/peers", "GET"), ("PUT", "/transfers/push", "POST"),
    ("POST", UNKNOWN_TX, "GET,DELETE"), ("GET", f"{UNKNOWN_TX}/commit", "PUT,POST"),
    ("DELETE", "/jobs", "GET"), ("GET", "/jobs/0123/pause", "POST"),
    ("POST", "/plugins", "GET"),
])
def test_a_wrong_method_is_405_naming_the_allowed_ones(host: FakeHost, method: str, uri: str,
                                                      allowed: str) -> None:
    response = host.call(method, uri)
    assert (response.status, response.allowed_method) == (405, allowed)


def test_an_unexpected_error_is_a_logged_500_json(host: FakeHost) -> None:
    host.plugins = {"not": "a list"}        # type: ignore[assignment]
    error = assert_json_error(host.call("GET", "/plugins"), 500)
    assert "AttributeError" in error["Details"]
    assert any(level == "error" and "Traceback" in text for level, text in host.logs)


def test_job_actions_that_the_state_forbids_are_409(host: FakeHost) -> None:
    gate = threading.Event()
    with ScriptedPeer([Rule("POST", "/transfers/lookup", (Reply(hold=gate),))]) as url:
        host.add_peer("slow", url)
        job_id = start_job(host, "/transfers/pull", transfer_query("slow"))
        wait_job(host, job_id, "Running")
        error = assert_json_error(host.call("POST", f"/jobs/{job_id}/resubmit"), 409)
        assert "Running" in error["Message"]
        assert host.call("POST", f"/jobs/{job_id}/pause").status == 200
        assert_json_error(host.call("POST", f"/jobs/{job_id}/resubmit"), 409)
        assert host.call("POST", f"/jobs/{job_id}/cancel").status == 200
        gate.set()
        assert wait_job(host, job_id, "Failure")["ErrorDescription"] == "Job was canceled"


# -- the source side: lookup and chunks --------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[FakeHost, TransfersApp, dict[str, bytes]]]:
    host = make_host(tmp_path / "source", RestrictChunksToTransfers=True)
    files = add_study(host)
    with running(host) as app:
        yield host, app, files


def test_lookup_describes_the_instances_sorted(
        source: tuple[FakeHost, TransfersApp, dict[str, bytes]]) -> None:
    host, app, files = source
    status, answer = post(host, "/transfers/lookup", [{"Level": "Study", "ID": STUDY}])
    assert status == 200
    assert answer["Instances"] == [{"ID": i, "Size": str(len(files[i])),
                                    "MD5": hashlib.md5(files[i]).hexdigest()}
                                   for i in sorted(files)]
    assert answer["Originator"] == app.services.originator
    assert answer["CountInstances"] == len(files)
    assert answer["TotalSize"] == str(sum(map(len, files.values())))
    assert answer["TotalSizeMB"] == 0 and "gzip" in answer["Encodings"]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_chunks_slice_the_concatenation_of_the_instances(
        source: tuple[FakeHost, TransfersApp, dict[str, bytes]], compression: str) -> None:
    host, _, files = source
    ids = sorted(files)[:3]
    assert post(host, "/transfers/lookup", [{"Level": "Instance", "ID": i} for i in ids])[0] \
        == 200
    whole = b"".join(files[i] for i in ids)
    answer = host.call("GET", f"/transfers/chunks/{'.'.join(ids)}",
                       args={"offset": "100", "size": "2000", "compression": compression})
    assert answer.status == 200
    assert answer.headers["X-Transfers-Encoding"] == compression
    body = answer.body if isinstance(answer.body, bytes) else answer.body.encode()
    data = gzip.decompress(body) if compression == "gzip" else body
    assert data == whole[100:2100]
    rest = host.call("GET", f"/transfers/chunks/{'.'.join(ids)}", args={"offset": "2100"})
    assert rest.body == whole[2100:]                  # size 0: to the end (§3.6)


def test_chunks_of_instances_no_lookup_announced_are_403(
        source: tuple[FakeHost, TransfersApp, dict[str, bytes]]) -> None:
    host, _, files = source
    uri = f"/transfers/chunks/{sorted(files)[0]}"
    assert_json_error(host.call("GET", uri), 403)
    assert post(host, "/transfers/lookup", [{"Level": "Study", "ID": STUDY}])[0] == 200
    assert host.call("GET", uri).status == 200


# -- /plugins, /transfers/peers, /jobs ---------------------------------------------------


def test_plugins_lists_transfers_for_original_peers(host: FakeHost) -> None:
    assert body_of(host.call("GET", "/plugins")) == ["python", "transfers"]
    described = body_of(host.call("GET", "/plugins/transfers"))
    assert described["ID"] == "transfers" and described["ExtendsOrthancExplorer"] is True


def test_peers_are_probed_independently(tmp_path: Path) -> None:
    host = make_host(tmp_path / "orthanc", PeerConnectivityTimeout=1)
    ours = ScriptedPeer([Rule("GET", "/plugins", (json_reply(["python", "transfers"]),))])
    plain = ScriptedPeer([Rule("GET", "/plugins", (json_reply(["python"]),))])
    broken = ScriptedPeer([Rule("GET", "/plugins", (Reply(200, b"<html>"),))])
    with ScriptedPeer() as dead_url:
        pass                                           # a port nobody listens on any more
    with running(host), ours as ours_url, plain as plain_url, broken as broken_url:
        host.add_peer("ours", ours_url)
        host.add_peer("both-ways", ours_url, RemoteSelf="me")
        host.add_peer("plain", plain_url)
        host.add_peer("broken", broken_url)
        host.add_peer("dead", dead_url)
        host.config["OrthancPeers"]["malformed"] = {"NoUrl": True}
        answer = host.call("GET", "/transfers/peers")
    assert body_of(answer) == {"ours": "installed", "both-ways": "bidirectional",
                               "plain": "disabled", "broken": "disabled", "dead": "disabled"}
    assert len(ours.requests_to("GET", "/plugins")) == 2


def test_jobs_lists_the_cores_jobs_and_ours(host: FakeHost) -> None:
    core = {"ID": "c0de-0001", "Type": "DicomModalityStore", "State": "Success"}
    host.core_jobs[core["ID"]] = core
    job_id = start_job(host, "/transfers/send", transfer_query("nowhere"))
    ours = wait_job(host, job_id, "Failure", "Success")
    assert body_of(host.call("GET", "/jobs")) == [core["ID"], job_id]
    expanded = body_of(host.call("GET", "/jobs", args={"expand": ""}))
    assert [j["ID"] for j in expanded] == [core["ID"], job_id]
    assert expanded[0] == core and expanded[1]["Type"] == "PushTransfer"
    assert expanded[1]["State"] == ours["State"] == "Failure"
    assert body_of(host.call("GET", f"/jobs/{core['ID']}")) == core         # the core's
    assert host.call("POST", f"/jobs/{core['ID']}/pause").status == 200
    assert host.core_job_actions == [f"/jobs/{core['ID']}/pause"]


def test_job_actions_follow_orthancs_rules(host: FakeHost) -> None:
    job_id = start_job(host, "/transfers/send", transfer_query("nowhere"))
    failed = wait_job(host, job_id, "Failure", "Success")
    assert failed["State"] == "Failure" and "Unknown resource" in failed["ErrorDescription"]
    assert failed["Content"]["FailureReason"]["Peer"] == "nowhere"
    assert host.call("POST", f"/jobs/{job_id}/pause").status == 200     # ignored, as Orthanc
    assert wait_job(host, job_id, "Failure")["State"] == "Failure"
    assert post(host, f"/jobs/{job_id}/resubmit", {})[0] == 200
    again = wait_job(host, job_id, "Failure", "Success")
    assert again["State"] == "Failure" and again["CompletionTime"] >= failed["CompletionTime"]
