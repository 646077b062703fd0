"""``orthanc-transfers`` run as a user would (a subprocess) against real Orthanc servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devkit.orthanc_server import OrthancServer, free_port

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugin"
USERS = {"alice": "secret"}


def run_cli(url: str, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m orthanc_transfers.cli --url URL ARGV...``, with only ``plugin/`` added."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("ORTHANC_URL", "ORTHANC_USER", "ORTHANC_PASSWORD")}
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH")) if p)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "orthanc_transfers.cli", "--url", url, *argv],
                          capture_output=True, text=True, env=environ, timeout=timeout,
                          check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def study_of(server: OrthancServer, files: list[bytes]) -> str:
    ids = server.upload(files)
    study: str = server.get_json(f"/instances/{ids[0]}/study")["ID"]
    return study


def test_peers_send_jobs_watch(pair: tuple[OrthancServer, OrthancServer],
                               study_files: list[bytes]) -> None:
    a, b = pair
    a.wipe()
    b.wipe()
    assert json.loads(ok(run_cli(a.url, "peers", "--json"))) == {"b": "installed"}
    assert ok(run_cli(a.url, "peers")).split() == ["PEER", "STATUS", "b", "installed"]

    study = study_of(a, study_files)
    result = run_cli(a.url, "send", "--peer", "b", "--wait", study)
    lines = ok(result).splitlines()
    assert lines[0].startswith("job ") and "100% Success" in lines[-1], result.stdout
    job_id = lines[0].split()[1]
    assert result.stderr == ""
    assert b.instance_md5s() == a.instance_md5s()

    jobs = json.loads(ok(run_cli(a.url, "jobs", "--json")))
    job = next(j for j in jobs if j["ID"] == job_id)
    assert job["Type"] == "PushTransfer" and job["State"] == "Success"
    assert job["Content"]["Peer"] == "b"
    table = ok(run_cli(a.url, "jobs")).splitlines()
    assert table[0].split() == ["ID", "TYPE", "STATE", "PROGRESS", "PEER", "TOTAL_MB"]
    assert [job_id, "PushTransfer", "Success", "100%", "b"] in [r.split()[:5] for r in table]

    assert "100% Success" in ok(run_cli(a.url, "watch", job_id))
    assert json.loads(ok(run_cli(a.url, "--json", "watch", job_id)))["ID"] == job_id

    result = run_cli(a.url, "resubmit", job_id)     # not allowed after a success: 409
    assert result.returncode == 2 and "HTTP 409" in result.stderr, result.stderr


def test_pull_wait(pair: tuple[OrthancServer, OrthancServer], study_files: list[bytes]) -> None:
    a, b = pair
    a.wipe()
    b.wipe()
    study = study_of(a, study_files)
    result = run_cli(b.url, "pull", "--peer", "a", "--compression", "none", "--priority", "3",
                     "--wait", "--json", study)
    job = json.loads(ok(result))                    # stdout: the final job, and only that
    assert job["Type"] == "PullTransfer" and job["State"] == "Success"
    assert job["Priority"] == 3 and job["Content"]["Compression"] == "none"
    assert "Success" in result.stderr               # progress lines go to stderr with --json
    assert b.instance_md5s() == a.instance_md5s()


def test_send_pull_mode_waits_for_the_tracking_job(make_cluster: Any,
                                                   study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], remote_self=True)
    ids = a.upload(study_files[:5])
    result = run_cli(a.url, "send", "--peer", "b", "--level", "Instance", "--wait", *ids)
    lines = ok(result).splitlines()
    assert lines[0].startswith("peer b pulls: remote job "), result.stdout
    assert "tracked here by job" in lines[0] and "100% Success" in lines[-1]
    assert b.instance_md5s() == a.instance_md5s()


def test_errors_exit_2_with_a_message(pair: tuple[OrthancServer, OrthancServer]) -> None:
    a, _ = pair
    result = run_cli(a.url, "watch", "no-such-job")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("orthanc-transfers: error: HTTP 404")
    assert "/jobs/no-such-job" in result.stderr and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr

    result = run_cli(a.url, "send", "--peer", "nobody", "0123abcd")
    assert result.returncode == 2 and "nobody" in result.stderr, result.stderr

    port = free_port()                              # nothing listens there
    result = run_cli(f"http://127.0.0.1:{port}", "jobs")
    assert result.returncode == 2
    assert result.stderr == (f"orthanc-transfers: error: cannot connect to "
                             f"http://127.0.0.1:{port}: Connection refused\n")


class AuthOrthancServer(OrthancServer):
    """An Orthanc with ``AuthenticationEnabled`` whose harness session has credentials.

    ``OrthancServer._ready()`` probes ``/system`` with ``self.session``; without
    credentials that is a 401 and the server never looks ready. A devkit that sets
    ``session.auth`` from ``RegisteredUsers`` itself makes this class a no-op.
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        users = self.config.get("RegisteredUsers") or {}
        if self.config.get("AuthenticationEnabled") and users:
            self.session.auth = next(iter(users.items()))


@pytest.fixture
def secure(pair: tuple[OrthancServer, OrthancServer]) -> Iterator[OrthancServer]:
    """A server behind HTTP authentication, with ``b`` of ``pair`` as its peer."""
    _, b = pair
    server = AuthOrthancServer("secure", config={
        "AuthenticationEnabled": True, "RegisteredUsers": USERS,
        "OrthancPeers": {"b": {"Url": b.url + "/"}}})
    try:
        yield server.start()
    finally:
        server.cleanup()


def test_credentials(secure: OrthancServer, pair: tuple[OrthancServer, OrthancServer],
                     study_files: list[bytes]) -> None:
    _, b = pair
    b.wipe()
    assert requests.get(secure.url + "/transfers/peers", timeout=10).status_code == 401

    result = run_cli(secure.url, "peers")
    assert result.returncode == 2 and result.stdout == "", result
    assert "401" in result.stderr and "Unauthorized" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = run_cli(secure.url, "--user", "alice", "--password", "wrong", "jobs")
    assert result.returncode == 2 and "401" in result.stderr

    assert set(json.loads(ok(run_cli(secure.url, "--user", "alice", "--password", "secret",
                                     "peers", "--json")))) == {"b"}
    study = study_of(secure, study_files[:4])
    credentials = {"ORTHANC_USER": "alice", "ORTHANC_PASSWORD": "secret"}
    ok(run_cli(secure.url, "send", "--peer", "b", "--wait", study, env=credentials))
    assert b.instance_md5s() == secure.instance_md5s()
    assert "PushTransfer" in ok(run_cli(secure.url, "jobs", env=credentials))
