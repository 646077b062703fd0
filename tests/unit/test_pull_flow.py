"""The PullTransfer job end to end: a receiver pulls from a source behind a scripted peer.

The source is a real TransfersApp over a FakeHost, reached through a ScriptedPeer that
forwards to its routes and injects faults on top (reference §5.1); the receiver is
driven through its own routes (``POST /transfers/pull``, ``/jobs``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from engine_harness import wait_for
from fake_host import FakeHost
from flow_support import (
    CHUNKS,
    add_study,
    job_threads,
    make_host,
    post,
    running,
    start_job,
    transfer_query,
    wait_job,
)
from orthanc_transfers.app import TransfersApp

from devkit.scripted_peer import (
    Exchange,
    Fault,
    Reply,
    Rule,
    ScriptedPeer,
    error_reply,
    json_reply,
    once,
)

pytestmark = pytest.mark.timeout(60)


@dataclass
class Pull:
    source: FakeHost
    receiver: FakeHost
    receiver_app: TransfersApp
    peer: ScriptedPeer
    files: dict[str, bytes]

    def start(self, compression: str = "none", **extra: object) -> str:
        return start_job(self.receiver, "/transfers/pull",
                         transfer_query("source", compression, **extra))

    def chunk_requests(self) -> list[Exchange]:
        return self.peer.requests_to("GET", CHUNKS)

    def assert_stored_as_sent(self) -> None:
        assert sorted(self.receiver.stored) == sorted(self.files.values())
        for instance, data in self.files.items():
            assert hashlib.md5(self.receiver.instances[instance]).hexdigest() == \
                hashlib.md5(data).hexdigest()


@pytest.fixture
def pull(tmp_path: Path) -> Iterator[Pull]:
    yield from _pull(tmp_path)


@pytest.fixture
def retrying_pull(tmp_path: Path) -> Iterator[Pull]:
    yield from _pull(tmp_path, MaxHttpRetries=2)


def _pull(tmp_path: Path, **receiver_options: object) -> Iterator[Pull]:
    source = make_host(tmp_path / "source")
    files = add_study(source)
    receiver = make_host(tmp_path / "receiver", **receiver_options)
    peer = ScriptedPeer.forwarding_to(source.routes)
    with running(source), running(receiver) as app, peer as url:
        receiver.add_peer("source", url)
        yield Pull(source, receiver, app, peer, files)
    assert job_threads() == [] and peer.errors == []


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_pull_stores_every_instance_byte_identical(pull: Pull, compression: str) -> None:
    job_id = pull.start(compression)
    done = wait_job(pull.receiver, job_id, "Success", "Failure")
    assert done["State"] == "Success", done
    pull.assert_stored_as_sent()
    content = done["Content"]
    assert content["TotalInstances"] == len(pull.files)
    assert content["TotalBuckets"] == 5 == content["CompletedHttpQueries"]
    assert content["RetriedHttpQueries"] == 0 and content["ReusedBuckets"] == 0
    assert done["Type"] == "PullTransfer" and done["Progress"] == 100
    lookup = pull.peer.requests_to("POST", "/transfers/lookup")
    assert len(lookup) == 1 and lookup[0].json() == [{"Level": "Study", "ID": "5a"}]
    assert lookup[0].headers["sender-transfer-id"] == job_id
    # every byte of every file was asked for exactly once
    asked = sorted((e.path, e.query["offset"], e.query["size"]) for e in pull.chunk_requests())
    assert len(set(asked)) == len(asked) == 5
    assert sum(int(size) for _, _, size in asked) == sum(map(len, pull.files.values()))


@pytest.mark.parametrize("fault", [Reply(fault=Fault.RESET), Reply(fault=Fault.CLOSE),
                                   error_reply(503, "busy")], ids=["reset", "close", "503"])
def test_a_failed_bucket_request_is_retried(retrying_pull: Pull, fault: Reply) -> None:
    pull = retrying_pull
    pull.peer.add(once("GET", CHUNKS, fault))
    done = wait_job(pull.receiver, pull.start(), "Success", "Failure")
    assert done["State"] == "Success", done
    pull.assert_stored_as_sent()
    assert done["Content"]["RetriedHttpQueries"] == 1
    assert done["Content"]["CompletedHttpQueries"] == 5
    assert len(pull.chunk_requests()) == 6


def test_import_during_transfer_stores_each_instance_once(pull: Pull) -> None:
    done = wait_job(pull.receiver, pull.start(ImportDuringTransfer=True), "Success", "Failure")
    assert done["State"] == "Success", done
    assert done["Content"]["ImportDuringTransfer"] is True
    pull.assert_stored_as_sent()


def test_skip_stored_instances_does_not_fetch_what_the_receiver_has(pull: Pull) -> None:
    kept = next(i for i, data in pull.files.items() if len(data) == 1800)  # a bucket alone
    pull.receiver.instances[kept] = pull.files[kept]
    done = wait_job(pull.receiver, pull.start(SkipStoredInstances=True), "Success", "Failure")
    assert done["State"] == "Success", done
    assert done["Content"]["SkippedInstances"] == 1 and done["Content"]["TotalBuckets"] == 4
    assert not [e for e in pull.chunk_requests() if kept in e.path]
    assert sorted(pull.receiver.stored) == sorted(d for i, d in pull.files.items() if i != kept)


def test_a_503_without_retries_fails_the_job_naming_the_request(pull: Pull) -> None:
    pull.peer.add(once("GET", CHUNKS, error_reply(503, "busy")))
    done = wait_job(pull.receiver, pull.start(), "Failure", "Success")
    assert done["State"] == "Failure"
    reason = done["Content"]["FailureReason"]
    assert reason["Peer"] == "source" and reason["Status"] == 503
    assert reason["URI"].startswith("/transfers/chunks/")
    assert "503" in done["ErrorDescription"]
    assert pull.receiver.stored == []            # nothing is imported from a failed pull


def test_a_corrupted_bucket_is_fetched_again(pull: Pull) -> None:
    pull.peer.add(once("GET", CHUNKS, Reply(fault=Fault.CORRUPT)))
    done = wait_job(pull.receiver, pull.start(), "Success", "Failure")
    assert done["State"] == "Success", done
    pull.assert_stored_as_sent()
    assert len(pull.chunk_requests()) > 5        # the damaged instance's buckets, again
    assert pull.receiver.metrics["orthanc_transfers_corrupted_instances_count"] == 1


def test_an_instance_corrupted_every_time_fails_the_job_after_the_cap(pull: Pull) -> None:
    victim = next(i for i, data in pull.files.items() if len(data) == 1500)  # a bucket alone
    pull.peer.add(Rule("GET", CHUNKS, (Reply(fault=Fault.CORRUPT),),
                       when=lambda exchange: victim in exchange.path))
    done = wait_job(pull.receiver, pull.start(), "Failure", "Success")
    assert done["State"] == "Failure"
    assert done["Content"]["FailureReason"]["Instance"] == victim
    assert len([e for e in pull.chunk_requests() if victim in e.path]) == 3
    assert pull.receiver.metrics["orthanc_transfers_corrupted_instances_count"] == 3
    assert pull.receiver.stored == []


def test_pause_then_resume_continues_without_fetching_done_buckets(pull: Pull) -> None:
    _interrupt_then_continue(pull, "pause", "Paused", "resume")


def test_cancel_then_resubmit_continues_without_fetching_done_buckets(pull: Pull) -> None:
    failed = _interrupt_then_continue(pull, "cancel", "Failure", "resubmit")
    assert failed["ErrorDescription"] == "Job was canceled"


def _interrupt_then_continue(pull: Pull, action: str, state: str,
                             again: str) -> dict[str, object]:
    """Hold the third bucket request, stop the job meanwhile, then let it go on."""
    gate = threading.Event()
    pull.peer.add(Rule("GET", CHUNKS, (Reply(),), times=2),
                  Rule("GET", CHUNKS, (Reply(hold=gate),), times=1))
    job_id = pull.start()
    wait_for_requests(pull, 3)
    assert post(pull.receiver, f"/jobs/{job_id}/{action}", {})[0] == 200
    stopped = wait_job(pull.receiver, job_id, state)
    gate.set()
    wait_for_no_job_thread()
    first_run = len(pull.chunk_requests())
    assert pull.receiver.stored == []
    assert post(pull.receiver, f"/jobs/{job_id}/{again}", {})[0] == 200
    done = wait_job(pull.receiver, job_id, "Success", "Failure")
    assert done["State"] == "Success", done
    pull.assert_stored_as_sent()
    content = done["Content"]
    second_run = pull.chunk_requests()[first_run:]
    assert content["ReusedBuckets"] >= 1
    assert len(second_run) == content["TotalBuckets"] - content["ReusedBuckets"] < 5
    assert len(pull.peer.requests_to("POST", "/transfers/lookup")) == 2
    return stopped


def wait_for_requests(pull: Pull, count: int) -> None:
    wait_for(lambda: len(pull.chunk_requests()) >= count, f"{count} bucket requests")


def wait_for_no_job_thread() -> None:
    wait_for(lambda: not job_threads(), "the job's threads to end")


# -- a scripted source that answers the lookup wrongly ------------------------------------


@pytest.mark.parametrize(("lookup", "expected"), [
    (json_reply({"Nothing": []}), "without Instances and Originator"),
    (json_reply({"Instances": [{"ID": "0a", "Size": "12", "MD5": "not-an-md5"}],
                 "Originator": "expected-originator"}), "Bad lookup answer"),
    (Reply(200, b"{not json"), "invalid JSON"),
    (json_reply({"Instances": [], "Originator": "someone-else"}), "Invalid originator"),
], ids=["no-instances", "bad-md5", "not-json", "originator"])
def test_a_bad_lookup_answer_fails_the_job_with_a_protocol_error(
        tmp_path: Path, lookup: Reply, expected: str) -> None:
    receiver = make_host(tmp_path / "receiver")
    script = ScriptedPeer([Rule("POST", "/transfers/lookup", (lookup,))])
    with running(receiver), script as url:
        receiver.add_peer("source", url)
        job_id = start_job(receiver, "/transfers/pull",
                           transfer_query("source", Originator="expected-originator"))
        done = wait_job(receiver, job_id, "Failure", "Success")
    assert done["State"] == "Failure"
    assert expected in done["ErrorDescription"]
    reason = done["Content"]["FailureReason"]
    assert reason["URI"] == "/transfers/lookup" and reason["Peer"] == "source"
    assert done["Content"]["Originator"] == "expected-originator"
    assert script.requests_to("GET", CHUNKS) == [] and receiver.stored == []


def test_an_instance_larger_than_max_instance_size_fails_before_any_download(
        tmp_path: Path) -> None:
    too_large = {"ID": "0a", "Size": str(2 << 20), "MD5": "0" * 32}     # 2 MiB > 1 MiB
    receiver = make_host(tmp_path / "receiver", MaxInstanceSize=1)
    script = ScriptedPeer([Rule("POST", "/transfers/lookup", (
        json_reply({"Instances": [too_large], "Originator": "o"}),))])
    with running(receiver), script as url:
        receiver.add_peer("source", url)
        done = wait_job(receiver, start_job(receiver, "/transfers/pull",
                                            transfer_query("source")), "Failure", "Success")
    assert done["State"] == "Failure"
    assert "exceeds Transfers.MaxInstanceSize" in done["ErrorDescription"]
    assert done["Content"]["FailureReason"]["URI"] == "/transfers/lookup"
    assert script.requests_to("GET", CHUNKS) == []
