"""Pull mode end to end on real servers, and transfer jobs inside Orthanc's /jobs."""

from __future__ import annotations

import time
from typing import Any

import pytest

from devkit.orthanc_server import (
    OrthancServer,
    resources,
    wait_for,
    wait_stored_while_transferring,
)
from devkit.wan_proxy import LinkProfile

#: Slow enough that a test can act while buckets move (about 2 s for the test study).
SLOW = LinkProfile("slow", delay=0.005, bandwidth=100e6)
# OutageDeadline 0: these tests check what a failure leaves and what a resubmit does.
SMALL_BUCKETS = {"Transfers": {"BucketSize": 512, "MaxHttpRetries": 1, "HttpRetryBackoff": 0.1,
                               "OutageDeadline": 0}}


def pull(receiver: OrthancServer, source_name: str, resource_list: list[dict[str, str]],
         compression: str = "gzip", **extra: Any) -> str:
    response = receiver.post("/transfers/pull", json={
        "Resources": resource_list, "Peer": source_name, "Compression": compression, **extra})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["Path"] == f"/jobs/{answer['ID']}"
    job_id: str = answer["ID"]
    return job_id


def study_of(server: OrthancServer, instance_id: str) -> str:
    study: str = server.get_json(f"/instances/{instance_id}/study")["ID"]
    return study


def progress_moves(server: OrthancServer, job_id: str) -> bool:
    return bool(server.get_json(f"/jobs/{job_id}")["Content"]["CompletedHttpQueries"] >= 2)


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_pull_study_and_samples_byte_identical(pair: tuple[OrthancServer, OrthancServer],
                                               study_files: list[bytes],
                                               sample_files: list[bytes],
                                               compression: str) -> None:
    a, b = pair
    a.wipe()
    b.wipe()
    ids = a.upload(study_files)
    sample_ids = a.upload(sample_files)
    wanted = resources("Study", study_of(a, ids[0])) + resources("Instance", *sample_ids)
    job_id = pull(b, "a", wanted, compression, Priority=7)
    job = b.wait_job(job_id)
    assert job["State"] == "Success", job
    assert job["Type"] == "PullTransfer" and job["Priority"] == 7 and job["Progress"] == 100
    content = job["Content"]
    assert content["Peer"] == "a" and content["Compression"] == compression
    assert content["Resources"] == wanted
    assert content["TotalInstances"] == len(set(ids) | set(sample_ids))
    # 20 MiB multi-frame: 3 slices; the rest fits in a few groups.
    assert content["CompletedHttpQueries"] >= 4
    assert b.instance_md5s() == a.instance_md5s()
    listed = b.get_json("/jobs")
    assert job_id in listed
    expanded = {j["ID"]: j for j in b.get_json("/jobs?expand")}
    assert expanded[job_id]["Type"] == "PullTransfer"
    assert isinstance(expanded[job_id]["Content"], dict)


def test_pull_skips_what_the_receiver_already_has_when_asked(
        pair: tuple[OrthancServer, OrthancServer], study_files: list[bytes]) -> None:
    a, b = pair
    a.wipe()
    b.wipe()
    ids = a.upload(study_files)
    b.upload(study_files[:5])
    study = resources("Study", study_of(a, ids[0]))
    job = b.wait_job(pull(b, "a", study, SkipStoredInstances=True))
    assert job["State"] == "Success"
    content = job["Content"]
    assert content["SkippedInstances"] == 5 and content["SkipStoredInstances"] is True
    assert content["TotalInstances"] == len(study_files)
    assert b.instance_md5s() == a.instance_md5s()
    # By default, as in the original, every requested instance is transferred again.
    again = b.wait_job(pull(b, "a", study))
    assert again["State"] == "Success", again
    assert again["Content"]["SkippedInstances"] == 0
    assert again["Content"]["SkipStoredInstances"] is False
    assert again["Content"]["CompletedHttpQueries"] == again["Content"]["TotalBuckets"] > 0
    assert b.instance_md5s() == a.instance_md5s()


def test_skip_stored_instances_option_is_the_default_of_requests(
        make_cluster: Any, study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config={"Transfers": {"SkipStoredInstances": True}})
    ids = a.upload(study_files[:4])
    b.upload(study_files[:4])
    job = b.wait_job(pull(b, "a", resources("Instance", *ids)))
    assert job["Content"]["SkippedInstances"] == 4 and job["Content"]["CompletedHttpQueries"] == 0
    forced = b.wait_job(pull(b, "a", resources("Instance", *ids), SkipStoredInstances=False))
    assert forced["Content"]["SkippedInstances"] == 0
    assert forced["State"] == "Success" and b.instance_md5s() == a.instance_md5s()


def test_core_jobs_are_listed_and_delegated(pair: tuple[OrthancServer, OrthancServer],
                                            study_files: list[bytes]) -> None:
    a, _ = pair
    a.wipe()
    ids = a.upload(study_files[:2])
    core = a.post(f"/studies/{study_of(a, ids[0])}/archive",
                  json={"Asynchronous": True}).json()["ID"]
    job = a.wait_job(core)
    assert job["Type"] == "Archive" and job["State"] == "Success"
    assert core in a.get_json("/jobs")
    assert any(j["ID"] == core for j in a.get_json("/jobs?expand"))
    assert a.get(f"/jobs/{core}/archive").status_code == 200   # not caught by our routes


def test_pause_resume_cancel_resubmit(make_cluster: Any, make_proxy: Any,
                                      study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config=SMALL_BUCKETS)
    link = make_proxy(a, SLOW)
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    total = sum(len(f) for f in study_files)
    job_id = pull(b, "a", resources("Instance", *ids), "none")
    wait_for(lambda: progress_moves(b, job_id), 30, "buckets to move")

    assert b.post(f"/jobs/{job_id}/pause").json() == {}
    wait_for(lambda: b.get_json(f"/jobs/{job_id}")["State"] == "Paused", 10, "Paused")
    paused = b.get_json(f"/jobs/{job_id}")
    assert paused["Progress"] > 0
    assert b.post(f"/jobs/{job_id}/resume").json() == {}
    assert b.wait_job(job_id)["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()

    b.wipe()
    before = link.counters.down
    job_id = pull(b, "a", resources("Instance", *ids), "none")
    wait_for(lambda: progress_moves(b, job_id), 30, "buckets to move")
    assert b.post(f"/jobs/{job_id}/cancel").json() == {}
    cancelled = b.wait_job(job_id)
    assert cancelled["State"] == "Failure" and cancelled["ErrorCode"] == 37
    # Workers stop within a second, buckets in flight included: the link goes quiet.
    time.sleep(1.0)
    quiet = link.counters.down
    time.sleep(0.5)
    assert link.counters.down == quiet
    assert b.get_json("/instances") == []               # nothing half-imported
    first_bytes = link.counters.down - before
    assert 0 < first_bytes < total
    staged = cancelled["Content"]["CompletedHttpQueries"]
    assert staged >= 2

    before = link.counters.down
    assert b.post(f"/jobs/{job_id}/resubmit").json() == {}
    done = b.wait_job(job_id)
    assert done["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()
    # Every bucket verified before the cancel is reused, none is downloaded again (the
    # bytes of buckets cut off in flight by the cancel are the only ones that travel twice).
    content = done["Content"]
    assert content["ReusedBuckets"] >= staged
    assert content["ReusedBuckets"] + content["CompletedHttpQueries"] == content["TotalBuckets"]
    assert link.counters.down - before < total

    invalid = b.post(f"/jobs/{job_id}/resubmit")
    assert invalid.status_code == 409 and "Success" in invalid.json()["Message"]


def test_source_dies_then_resubmit_fetches_only_the_rest(make_cluster: Any, make_proxy: Any,
                                                         study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config=SMALL_BUCKETS)
    link = make_proxy(a, SLOW)
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = pull(b, "a", resources("Instance", *ids), "gzip")
    wait_for(lambda: progress_moves(b, job_id), 30, "buckets to move")
    a.kill()
    failed = b.wait_job(job_id)
    assert failed["State"] == "Failure"
    reason = failed["Content"]["FailureReason"]
    assert reason["Peer"] == "a" and reason["URI"].startswith("/transfers/")
    done_before = failed["Content"]["CompletedHttpQueries"]
    assert b.get_json("/instances") == []

    a.start()
    assert b.post(f"/jobs/{job_id}/resubmit").json() == {}
    assert b.wait_job(job_id)["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()
    content = b.get_json(f"/jobs/{job_id}")["Content"]
    served_after_restart = a.metric("orthanc_transfers_chunks_served_count")
    assert done_before > 0 and content["ReusedBuckets"] >= done_before
    assert served_after_restart == content["TotalBuckets"] - content["ReusedBuckets"]


def test_jobs_survive_a_receiver_restart_and_resume(make_cluster: Any, make_proxy: Any,
                                                    study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config=SMALL_BUCKETS)
    link = make_proxy(a, SLOW)
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    done = b.wait_job(pull(b, "a", resources("Instance", *ids[:2])))
    assert done["State"] == "Success"

    b.wipe()
    job_id = pull(b, "a", resources("Instance", *ids), "none")
    wait_for(lambda: progress_moves(b, job_id), 30, "buckets to move")
    b.stop()
    served_before = a.metric("orthanc_transfers_chunks_served_count")
    b.start()
    assert b.get_json(f"/jobs/{done['ID']}")["State"] == "Success"
    assert b.wait_job(job_id)["State"] == "Success"          # resumed by itself
    assert b.instance_md5s() == a.instance_md5s()
    content = b.get_json(f"/jobs/{job_id}")["Content"]
    served_total = a.metric("orthanc_transfers_chunks_served_count")
    # Buckets verified before the restart were not fetched again; the source may still
    # have been serving a few in-flight buckets (Threads = 4) when b stopped.
    assert content["ReusedBuckets"] > 0
    fetched_again = served_total - served_before
    missing = content["TotalBuckets"] - content["ReusedBuckets"]
    assert missing <= fetched_again <= missing + 4


def test_concurrent_pulls_from_several_peers(make_cluster: Any,
                                             study_files: list[bytes],
                                             sample_files: list[bytes]) -> None:
    a, b, c = make_cluster(["a", "b", "c"], config={"ConcurrentJobs": 3})
    a_ids = a.upload(study_files)
    b_ids = b.upload(sample_files)
    jobs = [pull(c, "a", resources("Instance", *a_ids[:10]), "gzip"),
            pull(c, "a", resources("Instance", *a_ids[10:]), "none"),
            pull(c, "b", resources("Instance", *b_ids), "gzip")]
    for job_id in jobs:
        assert c.wait_job(job_id)["State"] == "Success"
    expected = {**a.instance_md5s(), **b.instance_md5s()}
    assert c.instance_md5s() == expected


def test_priority_orders_pending_jobs(make_cluster: Any, study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config={"ConcurrentJobs": 1})
    ids = a.upload(study_files)
    first = pull(b, "a", resources("Instance", *ids[:12]), "gzip")
    low = pull(b, "a", resources("Instance", ids[12]), "gzip", Priority=1)
    high = pull(b, "a", resources("Instance", ids[13]), "gzip", Priority=9)
    for job_id in (first, low, high):
        assert b.wait_job(job_id)["State"] == "Success"
    times = {j: b.get_json(f"/jobs/{j}")["CompletionTime"] for j in (low, high)}
    assert times[high] < times[low]


def test_cancel_aborts_buckets_in_flight(make_cluster: Any, make_proxy: Any,
                                         study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"])
    link = make_proxy(a, LinkProfile("narrow", delay=0.005, bandwidth=8e6))
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    multiframe = a.upload([max(study_files, key=len)])     # 3 slices of ~7 MB: 7 s each
    job_id = pull(b, "a", resources("Instance", *multiframe), "none")
    wait_for(lambda: link.counters.down > 1_000_000, 30, "a slice to be on its way")
    assert b.get_json(f"/jobs/{job_id}")["Content"]["CompletedHttpQueries"] == 0
    assert b.post(f"/jobs/{job_id}/cancel").json() == {}
    time.sleep(1.0)
    quiet = link.counters.down
    time.sleep(1.0)
    assert link.counters.down == quiet          # the slices in flight were dropped
    assert b.wait_job(job_id)["State"] == "Failure"


IMPORT_FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if method == 'POST' and uri == '/instances' then
    return httpHeaders['x-test-upload'] == 'yes'
  end
  return true
end
"""


@pytest.mark.parametrize("http_allowed", [True, False])
def test_parallel_import_through_orthancs_http_api(make_cluster: Any, tmp_path: Any,
                                                   study_files: list[bytes],
                                                   http_allowed: bool) -> None:
    """With ImportThroughHttp, imports go over loopback HTTP on several threads (with the
    registered user's credentials); when Orthanc refuses those requests, RestApiPost takes
    over. (Set explicitly: left to "auto", AllowThreads makes RestApiPost the path.)"""
    lua = tmp_path / "filter.lua"
    lua.write_text(IMPORT_FILTER)
    receiver: dict[str, Any] = {"AuthenticationEnabled": True,
                                "RegisteredUsers": {"importer": "secret"}}
    if not http_allowed:
        receiver["LuaScripts"] = [str(lua)]
    a, b = make_cluster(["a", "b"], per_server={"b": receiver},
                        config={"Transfers": {"ImportThroughHttp": True}})
    ids = a.upload(study_files)
    b.request("PUT", "/peers/a", json={"Url": a.url + "/"}).raise_for_status()
    job = b.wait_job(b.post("/transfers/pull", json={
        "Resources": resources("Instance", *ids), "Peer": "a",
        "Compression": "none"}).json()["ID"])
    assert job["State"] == "Success", job
    b.session.headers["X-Test-Upload"] = "yes"
    assert b.instance_md5s() == a.instance_md5s()
    fell_back = "using RestApiPost instead" in b.log_path.read_text()
    assert fell_back is not http_allowed


#: About 3 s for the test study: long enough to see imports while buckets still move.
SLOWER = LinkProfile("slower", delay=0.005, bandwidth=40e6)


def test_import_during_transfer_stores_verified_instances_before_the_end(
        make_cluster: Any, make_proxy: Any, study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config=SMALL_BUCKETS)
    link = make_proxy(a, SLOWER)
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = pull(b, "a", resources("Instance", *ids), "gzip", ImportDuringTransfer=True)
    wait_stored_while_transferring(b, job_id, b)
    job = b.wait_job(job_id)
    assert job["State"] == "Success", job
    assert job["Content"]["ImportDuringTransfer"] is True
    assert b.instance_md5s() == a.instance_md5s()


def test_import_during_transfer_source_dies_then_resubmit(make_cluster: Any, make_proxy: Any,
                                                          study_files: list[bytes]) -> None:
    config = {"Transfers": {**SMALL_BUCKETS["Transfers"], "ImportDuringTransfer": True}}
    a, b = make_cluster(["a", "b"], config=config)
    link = make_proxy(a, SLOWER)
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = pull(b, "a", resources("Instance", *ids), "gzip")
    wait_for(lambda: bool(b.get_json("/instances")), 30, "a first instance stored")
    a.kill()
    failed = b.wait_job(job_id)
    assert failed["State"] == "Failure"
    assert failed["Content"]["ImportDuringTransfer"] is True
    done_before = failed["Content"]["CompletedHttpQueries"]
    held = b.instance_md5s()
    # What the receiver holds is whole and verified: the source's bytes, nothing else.
    a.start()
    source_md5s = a.instance_md5s()
    assert held and len(held) < len(ids)
    assert all(source_md5s[i] == md5 for i, md5 in held.items())

    assert b.post(f"/jobs/{job_id}/resubmit").json() == {}
    assert b.wait_job(job_id)["State"] == "Success"
    assert b.instance_md5s() == source_md5s
    content = b.get_json(f"/jobs/{job_id}")["Content"]
    served_after_restart = a.metric("orthanc_transfers_chunks_served_count")
    assert done_before > 0 and content["ReusedBuckets"] >= done_before
    assert served_after_restart == content["TotalBuckets"] - content["ReusedBuckets"]
