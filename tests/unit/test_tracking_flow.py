"""Pull-mode send (reference §3.2, §5.2): ``POST /transfers/send`` to a peer with
``RemoteSelf`` makes the peer pull, and a local ``PullTransferTracking`` job follows the
remote job. The remote Orthanc is a ScriptedPeer playing its ``/transfers/pull`` and
``/jobs/{id}`` routes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from engine_harness import wait_for
from fake_host import FakeHost
from flow_support import body_of, job_threads, make_host, post, running, transfer_query, wait_job
from orthanc_transfers.app import TransfersApp

from devkit.scripted_peer import Reply, Rule, ScriptedPeer, error_reply, json_reply

pytestmark = pytest.mark.timeout(30)

REMOTE_JOB = "0f0f0f0f-1111-2222-3333-444444444444"
REMOTE_PATH = f"/jobs/{REMOTE_JOB}"


def remote_job(state: str, progress: int = 50, **extra: Any) -> Reply:
    return json_reply({"ID": REMOTE_JOB, "Type": "PullTransfer", "State": state,
                       "Progress": progress, "Content": {"Phase": "Transfer"}, **extra})


@dataclass
class Tracking:
    host: FakeHost
    app: TransfersApp
    remote: ScriptedPeer

    def send(self) -> dict[str, Any]:
        status, answer = post(self.host, "/transfers/send", transfer_query("remote", "gzip"))
        assert status == 200, answer
        return dict(answer)

    def local_job(self) -> str:
        """The tracking job, found as a client finds it: in ``GET /jobs?expand``."""
        listing = body_of(self.host.call("GET", "/jobs", args={"expand": ""}))
        return next(str(j["ID"]) for j in listing if j["Type"] == "PullTransferTracking")

    def actions(self) -> list[str]:
        return [e.path for e in self.remote.requests if e.method == "POST"
                and e.path.startswith(REMOTE_PATH)]


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[Tracking]:
    host = make_host(tmp_path / "sender")
    remote = ScriptedPeer([
        Rule("POST", "/transfers/pull", (json_reply({"ID": REMOTE_JOB, "Path": REMOTE_PATH}),)),
        Rule("POST", f"{REMOTE_PATH}/(pause|resume|cancel|resubmit)", (json_reply({}),))])
    with running(host) as app, remote as url:
        host.add_peer("remote", url, RemoteSelf="sender")
        yield Tracking(host, app, remote)
    assert job_threads() == [] and remote.errors == []


def test_send_in_pull_mode_makes_the_peer_pull_and_follows_its_job(tracking: Tracking) -> None:
    tracking.remote.add(Rule("GET", REMOTE_PATH, (remote_job("Running"),
                                                  remote_job("Success", 100))))
    answer = tracking.send()
    assert answer == {"Peer": "remote", "RemoteJob": REMOTE_JOB,
                      "URL": tracking.remote.url.rstrip("/") + REMOTE_PATH}
    pulled = tracking.remote.requests_to("POST", "/transfers/pull")[0]
    assert pulled.json() == {"Resources": [{"Level": "Study", "ID": "5a"}],
                             "Compression": "gzip", "Originator": tracking.app.services.originator,
                             "Peer": "sender"}                    # no Priority (§3.2)
    assert pulled.headers["sender-transfer-id"] == tracking.app.services.originator
    done = wait_job(tracking.host, tracking.local_job(), "Success", "Failure")
    assert done["State"] == "Success", done
    assert done["Content"]["RemoteState"] == "Success"
    assert done["Content"]["RemoteJob"] == REMOTE_JOB and done["Content"]["Peer"] == "remote"
    assert len(tracking.remote.requests_to("GET", REMOTE_PATH)) == 2


def test_a_remote_failure_is_resubmitted_once_then_reported(tracking: Tracking) -> None:
    """A remote job found failed at the first poll is resubmitted (a resent send)."""
    tracking.remote.add(Rule("GET", REMOTE_PATH, (
        remote_job("Failure", ErrorDescription="Bad MD5"),)))
    tracking.send()
    done = wait_job(tracking.host, tracking.local_job(), "Failure", "Success")
    assert done["State"] == "Failure"
    assert "remote pull job failed" in done["ErrorDescription"]
    assert done["Content"]["RemoteError"] == "Bad MD5"
    assert tracking.actions() == [f"{REMOTE_PATH}/resubmit"]


def test_pause_resume_and_cancel_are_forwarded_to_the_remote_job(tracking: Tracking) -> None:
    tracking.remote.add(Rule("GET", REMOTE_PATH, (remote_job("Running"),)))
    tracking.send()
    local = tracking.local_job()
    wait_for(lambda: tracking.remote.requests_to("GET", REMOTE_PATH) != [], "a first poll")
    assert post(tracking.host, f"/jobs/{local}/pause", {})[0] == 200
    wait_job(tracking.host, local, "Paused")
    wait_for(lambda: tracking.actions() == [f"{REMOTE_PATH}/pause"], "the remote pause")
    # resumed: the remote job, found paused, is resumed too
    tracking.remote.add(Rule("GET", REMOTE_PATH, (remote_job("Paused"), remote_job("Running"))))
    assert post(tracking.host, f"/jobs/{local}/resume", {})[0] == 200
    wait_for(lambda: f"{REMOTE_PATH}/resume" in tracking.actions(), "the remote resume")
    assert post(tracking.host, f"/jobs/{local}/cancel", {})[0] == 200
    cancelled = wait_job(tracking.host, local, "Failure")
    assert cancelled["ErrorDescription"] == "Job was canceled"
    wait_for(lambda: tracking.actions()[-1:] == [f"{REMOTE_PATH}/cancel"], "the remote cancel")


@pytest.mark.parametrize("answer", [json_reply({"Path": "/jobs/x"}), json_reply(["x"]),
                                    Reply(200, b"<html>")], ids=["no-id", "list", "html"])
def test_a_peer_that_creates_no_pull_job_is_a_json_error(tracking: Tracking,
                                                         answer: Reply) -> None:
    tracking.remote.add(Rule("POST", "/transfers/pull", (answer,)))
    status, error = post(tracking.host, "/transfers/send", transfer_query("remote"))
    assert status == 502 and error["HttpStatus"] == 502     # 500 in the original (§3.2)
    assert "remote" in error["Message"]
    listing = body_of(tracking.host.call("GET", "/jobs"))
    assert listing == []                                 # no tracking job


def test_a_refused_pull_is_a_json_error_naming_the_status(tracking: Tracking) -> None:
    tracking.remote.add(Rule("POST", "/transfers/pull", (error_reply(404, "Unknown peer"),)))
    status, error = post(tracking.host, "/transfers/send", transfer_query("remote"))
    assert status == 502 and error["HttpStatus"] == 502 and "404" in error["Message"]
    assert body_of(tracking.host.call("GET", "/jobs")) == []
