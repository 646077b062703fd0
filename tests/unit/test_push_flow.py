"""The PushTransfer job end to end: a sender pushes to a receiver behind a scripted peer.

The receiver is a real TransfersApp over a FakeHost, reached through a ScriptedPeer that
forwards to its routes and injects faults on top (reference §5.3: create, PUT buckets,
commit); the sender is driven through ``POST /transfers/send`` and ``/jobs``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from engine_harness import wait_for
from fake_host import FakeHost
from flow_support import (
    COMMIT,
    PUT_BUCKET,
    TRANSACTION,
    add_study,
    body_of,
    fake_dicom,
    instance_id,
    job_threads,
    make_host,
    post,
    running,
    start_job,
    transfer_query,
    wait_job,
)

from devkit.scripted_peer import Exchange, Fault, Reply, Rule, ScriptedPeer, error_reply, once

pytestmark = pytest.mark.timeout(60)


@dataclass
class Push:
    sender: FakeHost
    receiver: FakeHost
    peer: ScriptedPeer
    files: dict[str, bytes]

    def start(self, compression: str = "none") -> str:
        return start_job(self.sender, "/transfers/send", transfer_query("receiver", compression))

    def puts(self, start: int = 0) -> list[Exchange]:
        return [e for e in self.peer.requests[start:]
                if e.method == "PUT" and _is_bucket(e.path)]

    def assert_stored_as_sent(self) -> None:
        assert sorted(self.receiver.stored) == sorted(self.files.values())
        for instance, data in self.files.items():
            assert hashlib.md5(self.receiver.instances[instance]).digest() == \
                hashlib.md5(data).digest()


def _is_bucket(path: str) -> bool:
    return path.rsplit("/", 1)[-1].isdigit()


def bucket_index(exchange: Exchange) -> int:
    return int(exchange.path.rsplit("/", 1)[-1])


def _push(tmp_path: Path, sender_options: dict[str, object],
          receiver_options: dict[str, object]) -> Iterator[Push]:
    sender = make_host(tmp_path / "sender", **sender_options)
    files = add_study(sender)
    receiver = make_host(tmp_path / "receiver", **receiver_options)
    peer = ScriptedPeer.forwarding_to(receiver.routes)
    with running(receiver), running(sender), peer as url:
        sender.add_peer("receiver", url)
        yield Push(sender, receiver, peer, files)
    assert job_threads() == [] and peer.errors == []


@pytest.fixture
def push(tmp_path: Path) -> Iterator[Push]:
    yield from _push(tmp_path, {}, {})


@pytest.fixture
def retrying_push(tmp_path: Path) -> Iterator[Push]:
    yield from _push(tmp_path, {"MaxHttpRetries": 2}, {})


@pytest.fixture
def one_thread_push(tmp_path: Path) -> Iterator[Push]:
    yield from _push(tmp_path, {"Threads": 1}, {})


@pytest.fixture
def one_slot_push(tmp_path: Path) -> Iterator[Push]:
    yield from _push(tmp_path, {}, {"MaxPushTransactions": 1})


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_push_creates_puts_every_bucket_and_commits(push: Push, compression: str) -> None:
    job_id = push.start(compression)
    done = wait_job(push.sender, job_id, "Success", "Failure")
    assert done["State"] == "Success", done
    push.assert_stored_as_sent()
    created = push.peer.requests_to("POST", "/transfers/push")
    assert len(created) == 1 and created[0].status == 200
    plan = created[0].json()
    assert plan["Compression"] == compression
    assert sorted(i["ID"] for i in plan["Instances"]) == sorted(push.files)
    assert sorted(bucket_index(e) for e in push.puts()) == list(range(len(plan["Buckets"])))
    assert all(e.status == 200 for e in push.puts())
    assert [e.status for e in push.peer.requests_to("POST", COMMIT)] == [200]
    assert all(e.headers["sender-transfer-id"] == job_id for e in push.peer.requests)
    content = done["Content"]
    assert content["TotalBuckets"] == len(plan["Buckets"]) == content["CompletedHttpQueries"]
    assert content["RemoteTransaction"] == created[0].answer_json()["Path"]
    # the receiver forgot the transaction once committed, and says so
    status = push.receiver.call("GET", content["RemoteTransaction"])
    assert status.status == 200 and body_of(status)["Committed"] is True


def test_a_reset_bucket_is_retried(retrying_push: Push) -> None:
    push = retrying_push
    push.peer.add(once("PUT", PUT_BUCKET, Reply(fault=Fault.RESET)))
    done = wait_job(push.sender, push.start(), "Success", "Failure")
    assert done["State"] == "Success", done
    push.assert_stored_as_sent()
    assert done["Content"]["RetriedHttpQueries"] == 1
    assert len(push.puts()) == done["Content"]["TotalBuckets"] + 1


def test_resubmit_after_a_failure_sends_only_the_missing_buckets(push: Push) -> None:
    push.peer.add(Rule("PUT", PUT_BUCKET, (Reply(fault=Fault.RESET),), times=1,
                       when=lambda exchange: exchange.path.endswith("/2")))
    job_id = push.start()
    failed = wait_job(push.sender, job_id, "Failure", "Success")
    assert failed["State"] == "Failure"
    assert failed["Content"]["FailureReason"]["URI"].endswith("/2")
    done = _continue(push, job_id, "resubmit", failed["Content"]["RemoteTransaction"])
    assert done["Content"]["ReusedBuckets"] < done["Content"]["TotalBuckets"]


def test_pause_then_resume_keeps_the_transaction_and_sends_the_rest(
        one_thread_push: Push) -> None:
    """One bucket goes through, the next ones are held while the job is paused. With one
    thread (two requests in flight at most) the queue never drains, so no early commit
    leaves before the pause."""
    push = one_thread_push
    gate = threading.Event()
    push.peer.add(Rule("PUT", PUT_BUCKET, (Reply(),), times=1),
                  Rule("PUT", PUT_BUCKET, (Reply(hold=gate),)))
    job_id = push.start()
    wait_for(lambda: len(push.puts()) >= 2, "a second bucket PUT")
    assert post(push.sender, f"/jobs/{job_id}/pause", {})[0] == 200
    paused = wait_job(push.sender, job_id, "Paused")
    gate.set()
    done = _continue(push, job_id, "resume", paused["Content"]["RemoteTransaction"])
    assert done["Content"]["ReusedBuckets"] >= 1


def _continue(push: Push, job_id: str, action: str, transaction: str) -> dict[str, Any]:
    """Once the stopped job's threads are gone: continue it, and check that the receiver
    was asked what it holds and sent only the rest, in the same transaction."""
    wait_for(lambda: not job_threads(), "the job's threads to end")
    held = {bucket_index(e) for e in push.puts() if e.status == 200}
    first_run = len(push.peer.requests)
    assert push.receiver.stored == []
    assert post(push.sender, f"/jobs/{job_id}/{action}", {})[0] == 200
    done = wait_job(push.sender, job_id, "Success", "Failure")
    assert done["State"] == "Success", done
    push.assert_stored_as_sent()
    second = push.peer.requests[first_run:]
    assert [e.method for e in second if e.path == transaction] == ["GET"]
    assert [e.path for e in second if e.method == "POST"] == [f"{transaction}/commit"]
    total = done["Content"]["TotalBuckets"]
    assert sorted(bucket_index(e) for e in push.puts(first_run)) == \
        sorted(set(range(total)) - held)
    assert done["Content"]["ReusedBuckets"] == len(held)
    return done


def test_a_receiver_refusing_a_bucket_gets_its_transaction_deleted(retrying_push: Push) -> None:
    push = retrying_push
    push.peer.add(once("PUT", PUT_BUCKET, error_reply(400, "refused", orthanc_status=8)))
    done = wait_job(push.sender, push.start(), "Failure", "Success")
    assert done["State"] == "Failure"
    reason = done["Content"]["FailureReason"]
    assert reason["Status"] == 400 and reason["Peer"] == "receiver"
    refused = [e for e in push.puts() if e.status == 400]
    assert len(refused) == 1                           # a 4xx is not retried
    assert len([e for e in push.puts() if e.path == refused[0].path]) == 1
    transaction = done["Content"]["RemoteTransaction"]
    wait_for(lambda: push.peer.requests_to("DELETE", TRANSACTION) != [], "the DELETE")
    assert [e.path for e in push.peer.requests_to("DELETE", TRANSACTION)] == [transaction]
    assert push.receiver.call("GET", transaction).status == 404
    assert push.receiver.stored == []


def test_a_bucket_the_receiver_got_corrupted_is_sent_again(push: Push) -> None:
    push.peer.add(once("PUT", PUT_BUCKET, error_reply(400, "Bad MD5", orthanc_status=20)))
    done = wait_job(push.sender, push.start(), "Success", "Failure")
    assert done["State"] == "Success", done
    push.assert_stored_as_sent()
    damaged = next(e for e in push.puts() if e.status == 400)
    assert [e.status for e in push.puts() if e.path == damaged.path] == [400, 200]
    assert push.peer.requests_to("GET", TRANSACTION) != []   # asked what it still holds


def test_a_receiver_with_every_push_slot_busy_is_waited_for(one_slot_push: Push) -> None:
    push = one_slot_push
    blocker = fake_dicom(99, 10)
    status, opened = post(push.receiver, "/transfers/push", {
        "Instances": [{"ID": instance_id(blocker), "Size": "10",
                       "MD5": hashlib.md5(blocker).hexdigest()}],
        "Buckets": [[{"ID": instance_id(blocker), "Offset": "0", "Size": "10"}]],
        "Compression": "none"})
    assert status == 200
    job_id = push.start()
    wait_job(push.sender, job_id, "Running", phase="WaitingForReceiver")
    refused = push.peer.requests_to("POST", "/transfers/push")[0]
    assert refused.status == 503 and refused.answer_json()["HttpStatus"] == 503
    assert push.receiver.call("DELETE", opened["Path"]).status == 200
    done = wait_job(push.sender, job_id, "Success", "Failure")
    assert done["State"] == "Success", done
    push.assert_stored_as_sent()
    assert push.peer.requests_to("POST", "/transfers/push")[-1].status == 200


def test_an_unknown_resource_fails_the_job_before_any_request(push: Push) -> None:
    job_id = start_job(push.sender, "/transfers/send",
                       {"Resources": [{"Level": "Study", "ID": "ffff"}], "Peer": "receiver",
                        "Compression": "none"})
    done = wait_job(push.sender, job_id, "Failure", "Success")
    assert done["State"] == "Failure" and "ffff" in done["ErrorDescription"]
    assert push.peer.requests == []


def test_a_failed_early_commit_is_sent_again(push: Push) -> None:
    push.peer.add(once("POST", COMMIT, error_reply(500, "Orthanc is busy")))
    done = wait_job(push.sender, push.start(), "Success", "Failure")
    assert done["State"] == "Success", done
    push.assert_stored_as_sent()
    commits = push.peer.requests_to("POST", COMMIT)
    assert [e.status for e in commits] == [500, 200]
    # the first one, sent while the last buckets travelled, let the receiver wait for them
    assert "x-transfers-commit-wait" in commits[0].headers
    assert "x-transfers-commit-wait" not in commits[1].headers


def test_a_receiver_that_cannot_tell_what_it_holds_gets_a_new_transaction(push: Push) -> None:
    """The original plugin answers 405 to ``GET /transfers/push/{id}``: a resubmitted job
    then opens a new transaction and sends everything."""
    push.peer.add(Rule("GET", TRANSACTION, (error_reply(405, "Method not allowed"),)),
                  once("PUT", PUT_BUCKET, Reply(fault=Fault.RESET)))
    job_id = push.start()
    assert wait_job(push.sender, job_id, "Failure", "Success")["State"] == "Failure"
    wait_for(lambda: not job_threads(), "the job's threads to end")
    first_run = len(push.peer.requests)
    assert post(push.sender, f"/jobs/{job_id}/resubmit", {})[0] == 200
    done = wait_job(push.sender, job_id, "Success", "Failure")
    assert done["State"] == "Success", done
    push.assert_stored_as_sent()
    created = push.peer.requests_to("POST", "/transfers/push")
    assert len(created) == 2 and created[0].answer != created[1].answer
    assert sorted(bucket_index(e) for e in push.puts(first_run)) == \
        list(range(done["Content"]["TotalBuckets"]))
