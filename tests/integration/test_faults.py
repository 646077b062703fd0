"""Faults injected into real transfers: connection resets, stalls, kill -9 of either
side, a full staging disk. Each must end byte-identical, after retries or a resubmit,
with nothing half-imported on the way."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.orthanc_server import OrthancServer, resources, wait_for
from devkit.wan_proxy import LinkProfile

RETRYING = {"Transfers": {"BucketSize": 512, "MaxHttpRetries": 8, "HttpRetryBackoff": 0.1,
                          "HttpRetryBackoffMax": 0.5}}
SLOW = LinkProfile("slow", delay=0.005, bandwidth=100e6)


def start_pull(b: OrthancServer, ids: list[str], compression: str = "gzip") -> str:
    job_id: str = b.post("/transfers/pull", json={
        "Resources": resources("Instance", *ids), "Peer": "a",
        "Compression": compression}).json()["ID"]
    return job_id


def start_push(a: OrthancServer, ids: list[str], compression: str = "gzip") -> str:
    job_id: str = a.post("/transfers/send", json={
        "Resources": resources("Instance", *ids), "Peer": "b",
        "Compression": compression}).json()["ID"]
    return job_id


def completed(server: OrthancServer, job_id: str) -> int:
    done: int = server.get_json(f"/jobs/{job_id}")["Content"]["CompletedHttpQueries"]
    return done


@pytest.mark.parametrize("mode", ["pull", "push"])
def test_connection_resets_are_retried(make_cluster: Any, make_proxy: Any,
                                       study_files: list[bytes], mode: str) -> None:
    a, b = make_cluster(["a", "b"], config=RETRYING)
    flaky = LinkProfile("flaky", delay=0.005, bandwidth=200e6, reset_rate=0.05)
    if mode == "pull":
        link = make_proxy(a, flaky)
        b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    else:
        link = make_proxy(b, flaky)
        a.request("PUT", "/peers/b", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    owner = b if mode == "pull" else a
    link.reset_next(2, after_bytes=300_000)     # on top of the 5 % of connections reset
    job_id = start_pull(b, ids) if mode == "pull" else start_push(a, ids)
    wait_for(lambda: completed(owner, job_id) >= 2, 30, "buckets to move")
    link.reset_all()
    job = owner.wait_job(job_id, timeout=120)
    assert job["State"] == "Success", job
    assert job["Content"]["RetriedHttpQueries"] >= 1       # the resets did hit requests
    assert b.instance_md5s() == a.instance_md5s()


def test_a_stalled_link_times_out_and_is_retried(make_cluster: Any, make_proxy: Any,
                                                 study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config={**RETRYING, "HttpTimeout": 2})
    link = make_proxy(a, SLOW)
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = start_pull(b, ids, "none")
    wait_for(lambda: completed(b, job_id) >= 2, 30, "buckets to move")
    link.stall()
    release = threading.Timer(4.0, link.release)   # longer than HttpTimeout
    release.start()
    try:
        job = b.wait_job(job_id, timeout=120)
    finally:
        release.cancel()
        link.release()
    assert job["State"] == "Success", job
    assert job["Content"]["RetriedHttpQueries"] >= 1       # timed out, then tried again
    assert b.instance_md5s() == a.instance_md5s()


def test_kill_9_of_the_sender_mid_push(make_cluster: Any, make_proxy: Any,
                                       study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config=RETRYING)
    link = make_proxy(b, SLOW)
    a.request("PUT", "/peers/b", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = start_push(a, ids, "none")
    wait_for(lambda: completed(a, job_id) >= 3, 30, "buckets to move")
    a.kill()
    assert b.get_json("/instances") == []              # nothing half-imported
    a.start()                     # the interrupted job runs again by itself and resumes
    job = a.wait_job(job_id, timeout=120)
    assert job["State"] == "Success", job
    assert job["Content"]["ReusedBuckets"] >= 3
    assert b.instance_md5s() == a.instance_md5s()


def test_kill_9_of_the_receiver_mid_pull(make_cluster: Any, make_proxy: Any,
                                         study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config=RETRYING)
    link = make_proxy(a, SLOW)
    b.request("PUT", "/peers/a", json={"Url": link.url}).raise_for_status()
    ids = a.upload(study_files)
    job_id = start_pull(b, ids, "none")
    wait_for(lambda: completed(b, job_id) >= 3, 30, "buckets to move")
    b.kill()
    b.start()
    job = b.wait_job(job_id, timeout=120)
    assert job["State"] == "Success", job
    assert job["Content"]["ReusedBuckets"] >= 1
    assert b.instance_md5s() == a.instance_md5s()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs (root only, as CI runs): the staging disk that fills up."""
    mount = tmp_path / "staging"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
                   check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_staging_disk_fails_clearly_then_resubmit_finishes(
        make_cluster: Any, study_files: list[bytes], small_disk: Path) -> None:
    a, b = make_cluster(["a", "b"], per_server={"b": {"Transfers": {
        **RETRYING["Transfers"], "StagingDirectory": str(small_disk)}}})
    ids = a.upload(study_files)
    job_id = start_pull(b, ids, "none")
    failed = b.wait_job(job_id)
    assert failed["State"] == "Failure"
    assert "space" in failed["Content"]["FailureReason"]["Message"].lower()
    assert b.get_json("/instances") == []
    subprocess.run(["mount", "-o", "remount,size=100m", str(small_disk)], check=True)
    assert b.post(f"/jobs/{job_id}/resubmit").json() == {}
    assert b.wait_job(job_id)["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()


def test_the_disk_filling_up_during_a_transfer(make_cluster: Any, study_files: list[bytes],
                                               small_disk: Path) -> None:
    """The space check passes, then something else fills the disk: ENOSPC mid-way."""
    a, b = make_cluster(["a", "b"], per_server={"b": {"Transfers": {
        **RETRYING["Transfers"], "StagingDirectory": str(small_disk)}}})
    small = sorted(study_files, key=len)[:10]             # ~5 MB: fits in 12 MiB
    ids = a.upload(small)
    hog = small_disk / "hog"
    job_id = start_pull(b, ids, "none")
    hog.write_bytes(b"\0" * (11 * 1024 * 1024 - 64 * 1024))   # leaves almost nothing
    job = b.wait_job(job_id)
    if job["State"] == "Failure":                          # the hog came first: resubmit
        assert b.get_json("/instances") == []
        hog.unlink()
        assert b.post(f"/jobs/{job_id}/resubmit").json() == {}
        job = b.wait_job(job_id)
    hog.unlink(missing_ok=True)
    assert job["State"] == "Success", job
    assert b.instance_md5s() == a.instance_md5s()
