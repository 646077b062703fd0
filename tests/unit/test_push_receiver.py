"""The receiving end of push mode, through the routes it registers (reference §3.7-3.10,
§11): ``POST /transfers/push``, ``PUT .../{n}``, ``GET``, ``POST .../commit``, ``DELETE``."""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_harness import wait_for
from fake_host import FakeHost
from flow_support import body_of, fake_dicom, instance_id, make_host, post, running
from orthanc_transfers import push_receiver
from orthanc_transfers.hostapi import Response

pytestmark = pytest.mark.timeout(30)

A, B, C = fake_dicom(1, 1500), fake_dicom(2, 300), fake_dicom(3, 400)
FILES = {instance_id(data): data for data in (A, B, C)}
#: A in two slices, then B and C grouped: the payload of each bucket.
PAYLOADS = [A[:750], A[750:], B + C]


def plan(compression: str = "none", **extra: Any) -> dict[str, Any]:
    def chunk(data: bytes, offset: int, size: int) -> dict[str, str]:
        return {"ID": instance_id(data), "Offset": str(offset), "Size": str(size)}

    return {"Instances": [{"ID": instance_id(d), "Size": str(len(d)),
                           "MD5": hashlib.md5(d).hexdigest()} for d in (A, B, C)],
            "Buckets": [[chunk(A, 0, 750)], [chunk(A, 750, 750)],
                        [chunk(B, 0, len(B)), chunk(C, 0, len(C))]],
            "Compression": compression, **extra}


def open_transaction(host: FakeHost, **extra: Any) -> str:
    status, answer = post(host, "/transfers/push", plan(**extra))
    assert status == 200, answer
    assert answer["Path"] == f"/transfers/push/{answer['ID']}" and "none" in answer["Encodings"]
    return str(answer["Path"])


def put(host: FakeHost, path: str, index: int | str, data: bytes,
        **headers: str) -> Response:
    return host.call("PUT", f"{path}/{index}", data, headers=headers)


def status_of(host: FakeHost, path: str) -> dict[str, Any]:
    response = host.call("GET", path)
    assert response.status == 200, response.body
    value: dict[str, Any] = body_of(response)
    return value


def assert_json_error(response: Response, status: int) -> dict[str, Any]:
    assert response.status == status
    error: dict[str, Any] = body_of(response)
    assert error["HttpStatus"] == status and error["Message"]
    return error


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[FakeHost]:
    host = make_host(tmp_path / "receiver")
    with running(host):
        yield host


def test_a_transaction_receives_its_buckets_and_commits_them(receiver: FakeHost) -> None:
    path = open_transaction(receiver)
    assert status_of(receiver, path)["ReceivedBuckets"] == []
    for index, payload in enumerate(PAYLOADS):
        answer = put(receiver, path, index, payload)
        assert (answer.status, answer.body) == (200, "{}")
    held = status_of(receiver, path)
    assert held["ReceivedBuckets"] == [0, 1, 2] and held["Committed"] is False
    assert held["VerifiedInstances"] == held["CountInstances"] == 3
    assert receiver.stored == []                 # nothing before the commit
    assert receiver.call("POST", f"{path}/commit").status == 200
    assert sorted(receiver.stored) == sorted(FILES.values())
    assert status_of(receiver, path) == {"ID": path.rsplit("/", 1)[1], "Committed": True}
    assert receiver.call("POST", f"{path}/commit").status == 200     # idempotent
    assert len(receiver.stored) == 3
    assert receiver.metrics["orthanc_transfers_committed_push_count"] == 1


def test_gzip_buckets_are_inflated(receiver: FakeHost) -> None:
    path = open_transaction(receiver, compression="gzip")
    for index, payload in enumerate(PAYLOADS):
        assert put(receiver, path, index, gzip.compress(payload)).status == 200
    assert receiver.call("POST", f"{path}/commit").status == 200
    assert sorted(receiver.stored) == sorted(FILES.values())


@pytest.mark.parametrize("index", ["3", "999999999", "1234567890123"])
def test_a_bucket_index_out_of_the_plan_is_404(receiver: FakeHost, index: str) -> None:
    path = open_transaction(receiver)
    assert_json_error(put(receiver, path, index, b"x"), 404)


def test_a_corrupted_bucket_is_400_and_its_instance_forgotten(receiver: FakeHost) -> None:
    path = open_transaction(receiver)
    assert put(receiver, path, 0, PAYLOADS[0]).status == 200
    assert put(receiver, path, 2, PAYLOADS[2]).status == 200
    damaged = bytearray(PAYLOADS[1])
    damaged[10] ^= 0xFF
    error = assert_json_error(put(receiver, path, 1, bytes(damaged)), 400)
    assert error["OrthancStatus"] == 20            # CorruptedFile: the sender resends
    assert status_of(receiver, path)["ReceivedBuckets"] == [2]     # both slices of A gone
    assert receiver.metrics["orthanc_transfers_corrupted_instances_count"] == 1
    for index in (0, 1):
        assert put(receiver, path, index, PAYLOADS[index]).status == 200
    assert receiver.call("POST", f"{path}/commit").status == 200
    assert sorted(receiver.stored) == sorted(FILES.values())


@pytest.mark.parametrize(("body", "headers"), [
    (PAYLOADS[2][:-1], {}),                          # a byte short
    (PAYLOADS[2] + b"x", {}),                        # a byte too many
    (b"not gzip at all", {"X-Transfers-Encoding": "gzip"}),
    (PAYLOADS[2], {"X-Transfers-Encoding": "rot13"}),
])
def test_a_bucket_that_cannot_be_decoded_is_400(receiver: FakeHost, body: bytes,
                                                headers: dict[str, str]) -> None:
    path = open_transaction(receiver)
    assert_json_error(put(receiver, path, 2, body, **headers), 400)
    assert status_of(receiver, path)["ReceivedBuckets"] == []


def test_a_commit_with_missing_buckets_is_409_and_imports_nothing(receiver: FakeHost) -> None:
    path = open_transaction(receiver)
    assert put(receiver, path, 2, PAYLOADS[2]).status == 200
    error = assert_json_error(receiver.call("POST", f"{path}/commit"), 409)
    assert "misses 2 bucket(s)" in error["Message"]
    assert receiver.stored == []
    assert status_of(receiver, path)["ReceivedBuckets"] == [2]      # still open


def test_a_commit_may_wait_for_buckets_still_in_flight(receiver: FakeHost) -> None:
    path = open_transaction(receiver)
    for index in (0, 1):
        assert put(receiver, path, index, PAYLOADS[index]).status == 200
    answers: list[Response] = []
    commit = threading.Thread(target=lambda: answers.append(receiver.call(
        "POST", f"{path}/commit", headers={"X-Transfers-Commit-Wait": "10"})))
    commit.start()
    wait_for(lambda: receiver.metrics.get("orthanc_transfers_push_early_commit_count") == 1,
             "the commit to wait")
    assert put(receiver, path, 2, PAYLOADS[2]).status == 200
    commit.join(10)
    assert [a.status for a in answers] == [200]
    assert sorted(receiver.stored) == sorted(FILES.values())


def test_import_during_transfer_stores_verified_instances_before_the_commit(
        receiver: FakeHost) -> None:
    path = open_transaction(receiver, ImportDuringTransfer=True)
    assert put(receiver, path, 2, PAYLOADS[2]).status == 200
    wait_for(lambda: sorted(receiver.stored) == sorted([B, C]), "B and C to be imported")
    for index in (0, 1):
        assert put(receiver, path, index, PAYLOADS[index]).status == 200
    assert receiver.call("POST", f"{path}/commit").status == 200
    assert sorted(receiver.stored) == sorted(FILES.values())       # each one once


def test_delete_discards_the_transaction_and_its_files(receiver: FakeHost,
                                                       tmp_path: Path) -> None:
    path = open_transaction(receiver)
    assert put(receiver, path, 0, PAYLOADS[0]).status == 200
    staged = tmp_path / "receiver" / "push" / path.rsplit("/", 1)[1]
    assert staged.is_dir()
    assert (receiver.call("DELETE", path).status, receiver.call("GET", path).status) == (200, 404)
    assert not staged.exists()
    assert_json_error(put(receiver, path, 1, PAYLOADS[1]), 404)
    assert_json_error(receiver.call("POST", f"{path}/commit"), 404)
    assert_json_error(receiver.call("DELETE", path), 404)


def test_every_push_slot_active_is_503(tmp_path: Path) -> None:
    host = make_host(tmp_path / "receiver", MaxPushTransactions=1)
    with running(host):
        first = open_transaction(host)
        status, error = post(host, "/transfers/push", plan())
        assert status == 503 and error["HttpStatus"] == 503
        assert "MaxPushTransactions" in error["Message"]
        assert status_of(host, first)["Committed"] is False


def test_an_idle_transaction_is_evicted_for_a_new_one(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_receiver, "EVICTABLE_AFTER", 0.0)   # idle "long enough" at once
    host = make_host(tmp_path / "receiver", MaxPushTransactions=1)
    with running(host):
        first = open_transaction(host)
        second = open_transaction(host)
        assert host.call("GET", first).status == 404
        assert status_of(host, second)["Committed"] is False
        assert any("inactive push transaction" in text for _, text in host.logs)
        assert host.metrics["orthanc_transfers_aborted_push_count"] == 1


def test_transactions_survive_a_restart(tmp_path: Path) -> None:
    first = make_host(tmp_path / "receiver")
    with running(first):
        path = open_transaction(first)
        for index in (0, 2):
            assert put(first, path, index, PAYLOADS[index]).status == 200
    again = make_host(tmp_path / "receiver")
    with running(again):
        assert status_of(again, path)["ReceivedBuckets"] == [0, 2]
        assert put(again, path, 1, PAYLOADS[1]).status == 200
        assert again.call("POST", f"{path}/commit").status == 200
        assert sorted(again.stored) == sorted(FILES.values())


def test_an_expired_transaction_is_not_restored(tmp_path: Path) -> None:
    first = make_host(tmp_path / "receiver", PushTransactionTimeout=0)
    with running(first):
        path = open_transaction(first)
    again = make_host(tmp_path / "receiver", PushTransactionTimeout=0)
    with running(again):
        assert again.call("GET", path).status == 404
    assert list((tmp_path / "receiver" / "push").iterdir()) == []


def test_creation_refuses_an_inconsistent_plan(receiver: FakeHost) -> None:
    broken = plan()
    broken["Buckets"][1][0]["Size"] = "751"           # reads past the end of A
    status, error = post(receiver, "/transfers/push", broken)
    assert status == 400 and "past the end" in error["Message"]
    status, error = post(receiver, "/transfers/push", json.loads("[]"))
    assert status == 400
