"""``install`` and the life of a ``TransfersApp`` on a host: routes, Orthanc Explorer,
start (``ORTHANC_STARTED``), stop (``ORTHANC_STOPPED``) with jobs interrupted and run
again at the next start."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from engine_harness import wait_for
from flow_support import (
    add_study,
    job,
    job_threads,
    make_host,
    running,
    start_job,
    transfer_query,
    wait_job,
)
from orthanc_transfers.app import install
from orthanc_transfers.hostapi import ImportSettings

from devkit.scripted_peer import ScriptedPeer, error_reply, once

pytestmark = pytest.mark.timeout(30)

#: Every route of reference §3, plus /jobs and /plugins (the Python plugin's additions).
ROUTES = {
    "/plugins", "/plugins/transfers", "/jobs", "/jobs/([0-9a-f-]+)",
    "/jobs/([0-9a-f-]+)/(pause|resume|cancel|resubmit)",
    "/transfers/chunks/([.0-9a-f-]+)", "/transfers/lookup", "/transfers/peers",
    "/transfers/pull", "/transfers/push", "/transfers/push/([0-9a-f-]+)",
    "/transfers/push/([0-9a-f-]+)/([0-9]+|commit)", "/transfers/send",
}


def test_install_registers_the_routes_and_extends_the_explorer(tmp_path: Path) -> None:
    host = make_host(tmp_path / "orthanc")
    install(host)
    assert set(host.routes) == ROUTES
    assert len(host.explorer_js) == 1 and "/transfers/send" in host.explorer_js[0]
    assert (len(host.started_callbacks), len(host.stopped_callbacks)) == (1, 1)
    assert any("BucketSize" in text for _, text in host.logs)         # the settings
    assert host.import_settings == ImportSettings(False, commit_threads=1, timeout=60.0)
    assert not (tmp_path / "orthanc").exists()          # nothing on disk before the start


def test_a_push_before_orthanc_has_started_is_told_to_come_back(tmp_path: Path) -> None:
    host = make_host(tmp_path / "orthanc")
    install(host)
    plan = {"Instances": [], "Buckets": [], "Compression": "none"}
    answer = host.call("POST", "/transfers/push", json.dumps(plan))
    assert answer.status == 503 and "starting" in str(answer.body)


def test_a_bad_setting_refuses_to_install(tmp_path: Path) -> None:
    host = make_host(tmp_path / "orthanc", Threads=0)
    with pytest.raises(ValueError, match="Threads"):
        install(host)
    assert host.routes == {}


def test_start_prepares_the_staging_and_removes_orphans(tmp_path: Path) -> None:
    orphan = tmp_path / "orthanc" / "pull" / "0000-left-by-a-crash"
    orphan.mkdir(parents=True)
    (orphan / "manifest.json").write_text("{}")
    host = make_host(tmp_path / "orthanc")
    with running(host) as app:
        assert (tmp_path / "orthanc" / "push").is_dir() and not orphan.exists()
        assert any(f"originator {app.services.originator}" in text for _, text in host.logs)
        assert any("Transfers: Orthanc test" in text for _, text in host.logs)
        assert ("warning", "Transfers: imports through RestApiPost on 1 thread(s)") in host.logs


def test_stop_interrupts_jobs_and_the_next_start_runs_them_again(tmp_path: Path) -> None:
    source = make_host(tmp_path / "source")
    files = add_study(source)
    # The lookup is refused once; the job then waits 30 s before trying again.
    peer = ScriptedPeer.forwarding_to(
        source.routes, [once("POST", "/transfers/lookup", error_reply(503, "busy"))])
    options = {"MaxHttpRetries": 3, "HttpRetryBackoff": 30}
    with running(source), peer as url:
        first = make_host(tmp_path / "receiver", **options)
        first.add_peer("source", url)
        with running(first):
            job_id = start_job(first, "/transfers/pull", transfer_query("source"))
            wait_for(lambda: peer.requests_to("POST", "/transfers/lookup") != [],
                     "the first lookup")
            assert job(first, job_id)["State"] == "Running"
        # stopped: the runner was interrupted and joined, the job saved as pending
        assert job_threads() == []
        assert not [t for t in threading.enumerate() if t.name.startswith("TF-")]
        again = make_host(tmp_path / "receiver", **options)
        again.add_peer("source", url)
        install(again)
        assert job(again, job_id)["State"] == "Pending"      # listed before the start
        again.start()
        try:
            done = wait_job(again, job_id, "Success", "Failure")
        finally:
            again.stop()
    assert done["State"] == "Success", done
    assert sorted(again.stored) == sorted(files.values()) and first.stored == []
    assert len(peer.requests_to("POST", "/transfers/lookup")) == 2


def test_job_metrics_are_published(tmp_path: Path) -> None:
    host = make_host(tmp_path / "orthanc")
    host.add_peer("nowhere", "http://127.0.0.1:9/")
    with running(host):
        job_id = start_job(host, "/transfers/send", transfer_query("nowhere"))
        wait_job(host, job_id, "Failure")
        wait_for(lambda: (host.metrics.get("orthanc_transfers_jobs_failed_count"),
                          host.metrics.get("orthanc_transfers_jobs_running")) == (1, 0),
                 "the failure to be counted")
        assert host.metrics["orthanc_transfers_available_push_count"] == 4
