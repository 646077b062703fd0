"""Push mode and /transfers/send in both modes, on real servers."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import pytest

from devkit.orthanc_server import (
    OrthancServer,
    resources,
    wait_for,
    wait_stored_while_transferring,
)
from devkit.wan_proxy import LinkProfile

SLOW = LinkProfile("slow", delay=0.005, bandwidth=100e6)
# OutageDeadline 0: these tests check what a failure leaves and what a resubmit does.
SMALL_BUCKETS = {"Transfers": {"BucketSize": 512, "MaxHttpRetries": 1, "HttpRetryBackoff": 0.1,
                               "OutageDeadline": 0}}


def send(source: OrthancServer, peer: str, resource_list: list[dict[str, str]],
         compression: str = "gzip", **extra: Any) -> dict[str, Any]:
    response = source.post("/transfers/send", json={
        "Resources": resource_list, "Peer": peer, "Compression": compression, **extra})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_send_push_study_and_samples(pair: tuple[OrthancServer, OrthancServer],
                                     study_files: list[bytes], sample_files: list[bytes],
                                     compression: str) -> None:
    a, b = pair
    a.wipe()
    b.wipe()
    ids = a.upload(study_files)
    sample_ids = a.upload(sample_files)
    study = a.get_json(f"/instances/{ids[0]}/study")["ID"]
    wanted = resources("Study", study) + resources("Instance", *sample_ids)
    answer = send(a, "b", wanted, compression, Priority=-10)
    assert answer["Path"] == f"/jobs/{answer['ID']}"
    job = a.wait_job(answer["ID"])
    assert job["State"] == "Success", job
    assert job["Type"] == "PushTransfer" and job["Priority"] == -10
    content = job["Content"]
    assert content["Peer"] == "b" and content["Compression"] == compression
    assert content["TotalInstances"] == len(set(ids) | set(sample_ids))
    assert content["CompletedHttpQueries"] == content["TotalBuckets"] >= 4
    assert b.instance_md5s() == a.instance_md5s()


def test_send_pull_mode_returns_remote_job(make_cluster: Any, study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], remote_self=True)
    assert a.get_json("/transfers/peers") == {"b": "bidirectional"}
    ids = a.upload(study_files[:6])
    answer = send(a, "b", resources("Instance", *ids), "gzip", Priority=42)
    assert set(answer) == {"Peer", "RemoteJob", "URL"}
    assert answer["Peer"] == "b" and answer["URL"] == f"{b.url}/jobs/{answer['RemoteJob']}"
    remote = b.wait_job(answer["RemoteJob"])
    assert remote["State"] == "Success" and remote["Type"] == "PullTransfer"
    assert remote["Priority"] == 0                        # not forwarded, as the original
    assert b.instance_md5s() == a.instance_md5s()
    tracking = [j for j in a.get_json("/jobs?expand")
                if j["Content"].get("RemoteJob") == answer["RemoteJob"]]
    assert len(tracking) == 1 and tracking[0]["Type"] == "PullTransferTracking"
    assert a.wait_job(tracking[0]["ID"])["State"] == "Success"


def test_pull_mode_with_a_wrong_remote_self_fails_clearly(make_cluster: Any,
                                                          study_files: list[bytes]) -> None:
    a, b, c = make_cluster(["a", "b", "c"])
    # a tells b to pull from "c" while claiming to be a: the originator check catches it.
    a.request("PUT", "/peers/b", json={"Url": b.url + "/", "RemoteSelf": "c"})
    ids = a.upload(study_files[:1])
    c.upload(study_files[:1])
    answer = send(a, "b", resources("Instance", *ids))
    remote = b.wait_job(answer["RemoteJob"])
    assert remote["State"] == "Failure"
    assert "originator" in remote["Content"]["FailureReason"]["Message"].lower()


def test_more_pushes_than_max_push_transactions(make_cluster: Any, make_proxy: Any,
                                                study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config={"ConcurrentJobs": 5, **SMALL_BUCKETS},
                        per_server={"b": {"Transfers": {"MaxPushTransactions": 2}}})
    link = make_proxy(b, SLOW)
    a.request("PUT", "/peers/b", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    groups = [ids[i::5] for i in range(5)]
    jobs = [send(a, "b", resources("Instance", *group), "none")["ID"] for group in groups]
    for job_id in jobs:
        assert a.wait_job(job_id, timeout=180)["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()
    assert b.metric("orthanc_transfers_created_push_count") == 5


def test_receiver_restart_mid_push_then_resubmit_resumes(make_cluster: Any, make_proxy: Any,
                                                         study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config=SMALL_BUCKETS)
    link = make_proxy(b, SLOW)
    a.request("PUT", "/peers/b", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = send(a, "b", resources("Instance", *ids), "none")["ID"]
    wait_for(lambda: a.get_json(f"/jobs/{job_id}")["Content"]["CompletedHttpQueries"] >= 3,
             30, "buckets to move")
    b.kill()                                           # kill -9 mid-push
    failed = a.wait_job(job_id)
    assert failed["State"] == "Failure"
    assert failed["Content"]["FailureReason"]["Peer"] == "b"
    b.start()
    assert b.get_json("/instances") == []              # nothing half-imported
    assert a.post(f"/jobs/{job_id}/resubmit").json() == {}
    done = a.wait_job(job_id)
    assert done["State"] == "Success", done
    assert done["Content"]["ReusedBuckets"] >= 3       # held buckets were not sent again
    assert done["Content"]["CompletedHttpQueries"] == (done["Content"]["TotalBuckets"]
                                                       - done["Content"]["ReusedBuckets"])
    assert b.instance_md5s() == a.instance_md5s()


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_a_flipped_byte_is_caught_before_any_import(make_cluster: Any, make_proxy: Any,
                                                    study_files: list[bytes], mode: str) -> None:
    a, b = make_cluster(["a", "b"], config={"Transfers": {"MaxHttpRetries": 0}})
    ids = a.upload(study_files)
    if mode == "push":
        link = make_proxy(b)
        a.request("PUT", "/peers/b", json={"Url": link.url}).raise_for_status()
        link.corrupt_once("up", 12 * 1024 * 1024)      # inside the multi-frame's buckets
        job = a.wait_job(send(a, "b", resources("Instance", *ids), "none")["ID"])
    else:
        link = make_proxy(a)
        b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
        link.corrupt_once("down", 12 * 1024 * 1024)
        job = b.wait_job(b.post("/transfers/pull", json={
            "Resources": resources("Instance", *ids), "Peer": "a",
            "Compression": "none"}).json()["ID"])
    assert job["State"] == "Success", job
    assert b.instance_md5s() == a.instance_md5s()
    # The receiver saw the bad MD5 and had the instance's buckets sent again.
    assert b.metric("orthanc_transfers_corrupted_instances_count") == 1


def two_bucket_plan(instance_id: str, data: bytes) -> dict[str, Any]:
    """A push creation body cutting one instance after its first 1000 bytes."""
    return {"Instances": [{"ID": instance_id, "Size": str(len(data)),
                           "MD5": hashlib.md5(data).hexdigest()}],
            "Buckets": [[{"ID": instance_id, "Offset": "0", "Size": "1000"}],
                        [{"ID": instance_id, "Offset": "1000", "Size": str(len(data) - 1000)}]],
            "Compression": "none"}


def test_push_commit_is_idempotent_and_checks_completeness(pair: tuple[OrthancServer,
                                                                       OrthancServer],
                                                           study_files: list[bytes]) -> None:
    a, b = pair
    b.wipe()
    data = study_files[0]
    instance_id = a.upload([data])[0]
    plan = two_bucket_plan(instance_id, data)
    created = b.post("/transfers/push", data=json.dumps(plan)).json()
    path = created["Path"]
    assert path == f"/transfers/push/{created['ID']}"
    assert b.request("PUT", f"{path}/0", data=data[:1000]).json() == {}
    early = b.post(f"{path}/commit", data=b"")
    assert early.status_code == 409 and b.get_json("/instances") == []
    assert b.request("PUT", f"{path}/1", data=data[1000:]).json() == {}
    assert b.request("PUT", f"{path}/1", data=data[1000:]).json() == {}   # resending: harmless
    assert b.get_json(path)["ReceivedBuckets"] == [0, 1]
    assert b.request("PUT", f"{path}/7", data=b"x").status_code == 404
    assert b.request("PUT", f"{path}/0", data=b"short").status_code == 400
    assert b.post(f"{path}/commit", data=b"").json() == {}
    assert b.post(f"{path}/commit", data=b"").json() == {}               # retried commit
    assert b.get_json("/instances") == [instance_id]


def test_a_receiver_refuses_an_instance_corrupted_three_times(
        pair: tuple[OrthancServer, OrthancServer], study_files: list[bytes]) -> None:
    """400 while the sender may resend (the instance is forgotten), 409 at the third
    failure: the same rule as pull mode, and nothing is imported."""
    a, b = pair
    b.wipe()
    data = study_files[0]
    instance_id = a.upload([data])[0]
    plan = two_bucket_plan(instance_id, data)
    path = b.post("/transfers/push", data=json.dumps(plan)).json()["Path"]
    damaged = bytes(len(data) - 1000)
    statuses = []
    for _ in range(3):
        assert b.request("PUT", f"{path}/0", data=data[:1000]).json() == {}
        answer = b.request("PUT", f"{path}/1", data=damaged)
        error = answer.json()
        assert error["OrthancStatus"] == 20 and instance_id in error["Message"]
        statuses.append(answer.status_code)
    assert statuses == [400, 400, 409]
    assert b.get_json(path)["ReceivedBuckets"] == []       # forgotten each time
    assert b.get_json("/instances") == []


def test_commit_sent_early_waits_for_the_buckets_in_flight(
        pair: tuple[OrthancServer, OrthancServer], study_files: list[bytes]) -> None:
    a, b = pair
    b.wipe()
    data = study_files[1]
    instance_id = a.upload([data])[0]
    plan = two_bucket_plan(instance_id, data)
    path = b.post("/transfers/push", data=json.dumps(plan)).json()["Path"]
    assert b.request("PUT", f"{path}/0", data=data[:1000]).json() == {}
    wait = {"X-Transfers-Commit-Wait": "0.5"}
    missing = b.post(f"{path}/commit", data=b"", headers=wait)     # nothing comes: 409
    assert missing.status_code == 409 and b.get_json("/instances") == []
    bad = b.post(f"{path}/commit", data=b"", headers={"X-Transfers-Commit-Wait": "soon"})
    assert bad.status_code == 400 and "X-Transfers-Commit-Wait" in bad.json()["Message"]

    answers: list[Any] = []
    commit = threading.Thread(target=lambda: answers.append(b.post(
        f"{path}/commit", data=b"", headers={"X-Transfers-Commit-Wait": "30"})))
    commit.start()
    threading.Event().wait(0.3)
    assert commit.is_alive()                       # waiting for bucket 1
    assert b.request("PUT", f"{path}/1", data=data[1000:]).json() == {}
    commit.join(30)
    assert answers[0].status_code == 200, answers[0].text
    assert b.get_json("/instances") == [instance_id]
    assert b.metric("orthanc_transfers_push_early_commit_count") >= 2


def test_push_sends_its_commit_early_to_a_receiver_of_ours(
        pair: tuple[OrthancServer, OrthancServer], study_files: list[bytes]) -> None:
    a, b = pair
    a.wipe()
    b.wipe()
    ids = a.upload(study_files)
    before = b.metric("orthanc_transfers_push_early_commit_count")
    job = a.wait_job(send(a, "b", resources("Instance", *ids), "gzip")["ID"])
    assert job["State"] == "Success", job
    assert b.metric("orthanc_transfers_push_early_commit_count") == before + 1
    assert b.instance_md5s() == a.instance_md5s()


def test_concurrent_uploads_to_one_receiver(pair: tuple[OrthancServer, OrthancServer],
                                            study_files: list[bytes]) -> None:
    a, b = pair
    a.wipe()
    b.wipe()
    ids = a.upload(study_files)
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda g=group: answers.append(
        send(a, "b", resources("Instance", *g), "gzip"))) for group in (ids[:10], ids[10:])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in answers:
        assert a.wait_job(answer["ID"])["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()


ORIGINAL_METRICS = [           # reference §13, under the original plugin's names
    "orthanc_transfers_used_cache_size", "orthanc_transfers_cache_hit_count",
    "orthanc_transfers_cache_miss_count", "orthanc_transfers_available_push_count",
    "orthanc_transfers_created_push_count", "orthanc_transfers_committed_push_count",
    "orthanc_transfers_push_total_received_bytes_count",
    "orthanc_transfers_push_total_time_spent_in_reception_ms",
    "orthanc_transfers_push_total_time_spent_in_commit_ms",
]


def test_metrics_in_prometheus_format(make_cluster: Any, study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"])
    ids = a.upload(study_files[:5])
    assert a.wait_job(send(a, "b", resources("Instance", *ids))["ID"])["State"] == "Success"
    text = a.get("/tools/metrics-prometheus").text + b.get("/tools/metrics-prometheus").text
    present = {line.split()[0] for line in text.splitlines() if line and line[0] != "#"}
    assert set(ORIGINAL_METRICS) <= present, set(ORIGINAL_METRICS) - present
    total = sum(len(f) for f in study_files[:5])
    assert b.metric("orthanc_transfers_created_push_count") == 1
    assert b.metric("orthanc_transfers_committed_push_count") == 1
    assert b.metric("orthanc_transfers_push_total_received_bytes_count") == total
    assert b.metric("orthanc_transfers_available_push_count") == 4
    assert a.metric("orthanc_transfers_push_sent_bytes") > 0
    assert a.metric("orthanc_transfers_jobs_succeeded_count") == 1
    assert a.metric("orthanc_transfers_cache_miss_count") == 5


def test_push_with_import_during_transfer(make_cluster: Any, make_proxy: Any,
                                          study_files: list[bytes]) -> None:
    """The receiver stores verified instances while the other buckets still arrive."""
    a, b = make_cluster(["a", "b"], config=SMALL_BUCKETS)
    link = make_proxy(b, LinkProfile("slower", delay=0.005, bandwidth=40e6))
    a.request("PUT", "/peers/b", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = send(a, "b", resources("Instance", *ids), "gzip", ImportDuringTransfer=True)["ID"]
    wait_stored_while_transferring(a, job_id, b)
    job = a.wait_job(job_id)
    assert job["State"] == "Success", job
    assert job["Content"]["ImportDuringTransfer"] is True
    assert b.instance_md5s() == a.instance_md5s()
    assert b.metric("orthanc_transfers_active_push_count") == 0
