"""The command-line client against a canned local HTTP server (no Orthanc needed)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from orthanc_transfers import cli

PEERS = {"b": "bidirectional", "c": "disabled"}
PUSH_JOB = {"ID": "push1", "Type": "PushTransfer", "State": "Success", "Progress": 100,
            "Content": {"Peer": "b", "TotalSizeMB": 42, "UploadedSizeMB": 42, "Phase": "Done"}}
TRACKING_JOB = {"ID": "track1", "Type": "PullTransferTracking", "State": "Running",
                "Progress": 10, "Content": {"Peer": "remote", "RemoteJob": "r1",
                                            "RemoteContent": {"TotalSizeMB": 7}}}
CORE_JOB = {"ID": "core1", "Type": "DicomModalityStore", "State": "Success", "Progress": 100,
            "Content": {}}
RUNNING = {"State": "Running", "Progress": 40, "Content": {
    "Phase": "Transfer", "TotalSizeMB": 20, "DownloadedSizeMB": 8, "NetworkSpeedKBs": 2048}}
FAILURE = {"State": "Failure", "Progress": 50, "ErrorDescription": "Peer b is unreachable",
           "ErrorDetails": "connection refused", "Content": {
               "FailureReason": {"Peer": "b", "URI": "/transfers/push", "Status": 0}}}
NOT_FOUND = {"HttpError": "Not Found", "HttpStatus": 404, "Message": "Unknown resource",
             "Method": "GET", "OrthancError": "Unknown resource", "OrthancStatus": 17}


class CannedServer(ThreadingHTTPServer):
    """Answers the routes of the CLI with canned JSON; records what it was sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.auth: tuple[str, str] | None = None
        self.posted: list[tuple[str, Any]] = []
        self.sequences: dict[str, list[dict[str, Any]]] = {}
        self.jobs = [PUSH_JOB, TRACKING_JOB, CORE_JOB]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def job_states(self, job_id: str) -> dict[str, Any] | None:
        """The next state of a job's canned sequence (the last one repeats)."""
        sequence = self.sequences.get(job_id)
        if not sequence:
            return None
        state = sequence.pop(0) if len(sequence) > 1 else sequence[0]
        return {"ID": job_id, "Type": "PushTransfer", **state}


class Handler(BaseHTTPRequestHandler):
    server: CannedServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, status: int, body: Any = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Orthanc Secure Area"')
        self.end_headers()
        self.wfile.write(data)

    def authorized(self) -> bool:
        if self.server.auth is None:
            return True
        expected = base64.b64encode(":".join(self.server.auth).encode()).decode()
        if self.headers.get("Authorization") == f"Basic {expected}":
            return True
        self.answer(401)
        return False

    def do_GET(self) -> None:
        if not self.authorized():
            return
        if self.path == "/transfers/peers":
            self.answer(200, PEERS)
        elif self.path == "/jobs?expand":
            self.answer(200, self.server.jobs)
        elif self.path == "/html":
            self.answer(200, raw=b"<html>hello</html>")
        elif self.path.startswith("/jobs/") and \
                (job := self.server.job_states(self.path[len("/jobs/"):])) is not None:
            self.answer(200, job)
        else:
            self.answer(404, {**NOT_FOUND, "Uri": self.path})

    def do_POST(self) -> None:
        if not self.authorized():
            return
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"null")
        self.server.posted.append((self.path, body))
        if self.path == "/transfers/send" and body["Peer"] == "remote":
            self.answer(200, {"Peer": "remote", "RemoteJob": "r1",
                              "URL": "http://remote:8042/jobs/r1"})
        elif self.path == "/transfers/send" and body["Peer"] == "orphan":
            self.answer(200, {"Peer": "orphan", "RemoteJob": "r9", "URL": "http://x/jobs/r9"})
        elif self.path in ("/transfers/send", "/transfers/pull"):
            self.answer(200, {"ID": "push1", "Path": "/jobs/push1"})
        elif self.path.startswith("/jobs/push1/"):
            self.answer(200, {})
        else:
            self.answer(404, {**NOT_FOUND, "Method": "POST", "Uri": self.path})


@pytest.fixture
def server() -> Iterator[CannedServer]:
    httpd = CannedServer()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    httpd.sequences = {"ok": [RUNNING, {**RUNNING, "Progress": 80}, {"State": "Success",
                                                                     "Progress": 100}],
                       "bad": [RUNNING, FAILURE],
                       "push1": [RUNNING, {"State": "Success", "Progress": 100}],
                       "track1": [{"State": "Success", "Progress": 100}]}
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORTHANC_URL", "ORTHANC_USER", "ORTHANC_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def run(server: CannedServer, *argv: str) -> int:
    return cli.main(["--url", server.url, "--interval", "0", *argv])


# -- argument parsing ---------------------------------------------------------------------


def test_global_options_before_or_after_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["--url", "http://x:1", "peers", "--json", "--timeout", "3"])
    assert (args.url, args.json, args.timeout, args.insecure) == ("http://x:1", True, 3.0, False)
    assert parser.parse_args(["--json", "jobs"]).json is True     # not reset by the command
    assert parser.parse_args(["jobs"]).url == "http://localhost:8042"
    monkeypatch.setenv("ORTHANC_URL", "https://pacs:8043")
    monkeypatch.setenv("ORTHANC_USER", "alice")
    monkeypatch.setenv("ORTHANC_PASSWORD", "secret")
    args = cli.build_parser().parse_args(["jobs", "--all"])
    assert (args.url, args.user, args.password, args.all) == (
        "https://pacs:8043", "alice", "secret", True)


def test_transfer_arguments_and_body() -> None:
    args = cli.build_parser().parse_args(["send", "--peer", "b", "s1", "s2"])
    assert (args.level, args.compression, args.priority, args.wait) == ("Study", "gzip", None,
                                                                         False)
    assert cli.transfer_body(args) == {
        "Resources": [{"Level": "Study", "ID": "s1"}, {"Level": "Study", "ID": "s2"}],
        "Peer": "b", "Compression": "gzip"}
    args = cli.build_parser().parse_args(["pull", "--peer", "a", "--level", "Series",
                                          "--compression", "none", "--priority", "-3",
                                          "--outage-deadline", "600", "--wait", "x"])
    assert cli.transfer_body(args) == {"Resources": [{"Level": "Series", "ID": "x"}],
                                       "Peer": "a", "Compression": "none", "Priority": -3,
                                       "OutageDeadline": 600}


@pytest.mark.parametrize("argv", [[], ["send", "s1"], ["send", "--peer", "b"],
                                  ["send", "--peer", "b", "--level", "Frame", "x"],
                                  ["send", "--peer", "b", "--priority", "high", "x"],
                                  ["watch"], ["frobnicate"], ["--timeout", "soon", "peers"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage:" in err


@pytest.mark.parametrize("command", [[], ["peers"], ["send"], ["pull"], ["jobs"], ["watch"],
                                     *([action] for action in cli.ACTIONS)])
def test_help_exits_0(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*command, "--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: orthanc-transfers") and "--url" in out and err == ""


# -- rendering ----------------------------------------------------------------------------


def test_render_table_aligns_columns() -> None:
    table = cli.render_table(["ID", "STATE"], [["a", "Running"], ["bbbb", None]])
    assert table.splitlines() == ["ID    STATE", "a     Running", "bbbb"]


def test_render_progress() -> None:
    line = cli.render_progress({"ID": "j", **RUNNING}, width=10)
    assert line == "[####------]  40% Running Transfer 20 MB, 8 MB on the wire, 2.0 MB/s"
    assert cli.render_progress({"State": "Pending", "Progress": 0}, width=4) == \
        "[----]   0% Pending"
    done = {"State": "Success", "Progress": 100, "Content": {"UploadedSizeMB": 3,
                                                             "NetworkSpeedKBs": 300}}
    assert cli.render_progress(done, width=4) == "[####] 100% Success 3 MB on the wire, 300 KB/s"
    tracking = {"State": "Running", "Progress": 50, "Content": {"RemoteContent": {
        "Phase": "Import", "DownloadedSizeMB": 5, "TotalSizeMB": 5}}}
    assert cli.render_progress(tracking, width=2) == \
        "[#-]  50% Running Import 5 MB, 5 MB on the wire"
    odd = {"State": "Running", "Progress": "lots", "Content": {"TotalSizeMB": "?",
                                                              "DownloadedSizeMB": True}}
    assert cli.render_progress(odd, width=2) == "[--]   0% Running"
    waiting = {"State": "Running", "Progress": 40, "Content": {
        "Phase": "Waiting", "Waiting": {"Peer": "b", "NextTryInSeconds": 40}}}
    assert cli.render_progress(waiting, width=2) == \
        "[--]  40% Running Waiting - waiting for peer b, next try in 40 s"
    remote_waits = {"State": "Running", "Progress": 10, "Content": {"RemoteContent": {
        "Phase": "Waiting", "Waiting": {"Peer": "a", "NextTryInSeconds": 5}}}}
    assert cli.render_progress(remote_waits, width=2).endswith(
        "waiting for peer a, next try in 5 s")


def test_job_row_and_failure_lines() -> None:
    assert cli.job_row(TRACKING_JOB) == ["track1", "PullTransferTracking", "Running", "10%",
                                         "remote", 7]
    assert cli.failure_lines({"ID": "j", **FAILURE}) == [
        "job j failed: Peer b is unreachable", "  details: connection refused",
        "  reason: Peer=b, URI=/transfers/push, Status=0"]


def test_watch_draws_a_bar_on_a_terminal(server: CannedServer) -> None:
    display = io.StringIO()
    job = cli.watch(cli.Client(server.url), "ok", display, interval=0, tty=True)
    assert job["State"] == "Success"
    frames = display.getvalue().split("\r")[1:]
    assert len(frames) == 3 and display.getvalue().endswith("\n")
    assert frames[0].startswith("[" + "#" * 12 + "-" * 18 + "]  40% Running Transfer")
    assert frames[2].startswith("[" + "#" * 30 + "] 100% Success")
    assert len(frames[2].rstrip("\n")) == len(frames[1])        # wipes the longer line


def test_watch_prints_periodic_lines_elsewhere(server: CannedServer) -> None:
    display, naps = io.StringIO(), []
    cli.watch(cli.Client(server.url), "ok", display, interval=0.25, line_every=3600,
              tty=False, sleep=naps.append)
    lines = display.getvalue().splitlines()
    assert naps == [0.25, 0.25]
    assert len(lines) == 2 and "\r" not in display.getvalue()   # first and last only
    assert lines[0].startswith("ok [") and "40%" in lines[0] and "100% Success" in lines[1]
    display = io.StringIO()
    server.sequences["ok"] = [RUNNING, RUNNING, {"State": "Success", "Progress": 100}]
    cli.watch(cli.Client(server.url), "ok", display, interval=0, line_every=0, tty=False)
    assert len(display.getvalue().splitlines()) == 2             # unchanged lines skipped


# -- commands and exit codes --------------------------------------------------------------


def test_peers_table_and_json(server: CannedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "peers") == 0
    assert capsys.readouterr().out.splitlines() == ["PEER  STATUS", "b     bidirectional",
                                                    "c     disabled"]
    assert run(server, "peers", "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == PEERS and err == ""


def test_jobs_lists_transfer_jobs(server: CannedServer,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "jobs") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "STATE", "PROGRESS", "PEER", "TOTAL_MB"]
    assert [line.split()[0] for line in lines[1:]] == ["push1", "track1"]
    assert lines[1].split() == ["push1", "PushTransfer", "Success", "100%", "b", "42"]
    assert run(server, "--json", "jobs", "--all") == 0
    assert [job["ID"] for job in json.loads(capsys.readouterr().out)] == ["push1", "track1",
                                                                         "core1"]
    server.jobs = [CORE_JOB]
    assert run(server, "jobs") == 0
    assert capsys.readouterr().out == "no transfer jobs\n"


def test_watch_success_failure_unknown(server: CannedServer,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "watch", "ok") == 0
    out, err = capsys.readouterr()
    assert "100% Success" in out.splitlines()[-1] and err == ""
    assert run(server, "watch", "bad") == 1
    out, err = capsys.readouterr()
    assert "Failure" in out.splitlines()[-1]
    assert err.splitlines() == ["job bad failed: Peer b is unreachable",
                                "  details: connection refused",
                                "  reason: Peer=b, URI=/transfers/push, Status=0"]
    assert run(server, "watch", "nope") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("orthanc-transfers: error: HTTP 404 Not Found on GET /jobs/nope: "
                   "Unknown resource\n")


def test_watch_json_keeps_stdout_machine_readable(server: CannedServer,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "watch", "--json", "ok") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["State"] == "Success"
    assert "100% Success" in err                                 # progress went to stderr


def test_send_push_and_wait(server: CannedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "send", "--peer", "b", "--priority", "5", "s1") == 0
    assert capsys.readouterr().out == f"job push1 ({server.url}/jobs/push1)\n"
    assert server.posted[-1] == ("/transfers/send", {
        "Resources": [{"Level": "Study", "ID": "s1"}], "Peer": "b", "Compression": "gzip",
        "Priority": 5})
    assert run(server, "--json", "pull", "--peer", "b", "--level", "Instance", "i1") == 0
    assert json.loads(capsys.readouterr().out) == {"ID": "push1", "Path": "/jobs/push1"}
    assert server.posted[-1][0] == "/transfers/pull"
    assert run(server, "send", "--peer", "b", "--wait", "s1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("job push1") and "100% Success" in out[-1]


def test_send_pull_mode_watches_the_tracking_job(server: CannedServer,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "send", "--peer", "remote", "s1") == 0
    assert capsys.readouterr().out == ("peer remote pulls: remote job r1 "
                                       "(http://remote:8042/jobs/r1), tracked here by job "
                                       "track1\n")
    assert run(server, "send", "--peer", "remote", "--wait", "--json", "s1") == 0
    assert json.loads(capsys.readouterr().out)["ID"] == "track1"
    assert run(server, "send", "--peer", "orphan", "--wait", "s1") == 2
    err = capsys.readouterr().err
    assert "remote job r9" in err and "credentials" in err and "watch r9" in err


def test_job_actions(server: CannedServer, capsys: pytest.CaptureFixture[str]) -> None:
    for action in cli.ACTIONS:
        assert run(server, action, "push1") == 0
        assert server.posted[-1] == (f"/jobs/push1/{action}", {})
    assert capsys.readouterr().out.splitlines()[0] == "job push1: pause accepted"
    assert run(server, "--json", "cancel", "push1") == 0
    assert json.loads(capsys.readouterr().out) == {"ID": "push1", "Action": "cancel"}
    assert run(server, "resubmit", "ghost") == 2
    assert "HTTP 404 Not Found on POST /jobs/ghost/resubmit: Unknown resource" in \
        capsys.readouterr().err


def test_credentials(server: CannedServer, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    server.auth = ("alice", "secret")
    assert run(server, "peers") == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "HTTP 401 Unauthorized on GET /transfers/peers" in err and "--user" in err
    assert run(server, "peers", "--user", "alice", "--password", "wrong") == 2
    assert run(server, "peers", "--user", "alice", "--password", "secret") == 0
    monkeypatch.setenv("ORTHANC_USER", "alice")
    monkeypatch.setenv("ORTHANC_PASSWORD", "secret")
    capsys.readouterr()
    assert run(server, "--json", "peers") == 0
    assert json.loads(capsys.readouterr().out) == PEERS


def test_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli.main(["--url", f"http://127.0.0.1:{port}", "jobs"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"orthanc-transfers: error: cannot connect to http://127.0.0.1:{port}: "
                   "Connection refused\n")


def test_other_errors_are_one_line(server: CannedServer, tmp_path: Any,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(server, "--ca-cert", str(tmp_path / "missing.pem"), "peers") == 2
    assert "missing.pem: no such file" in capsys.readouterr().err
    assert cli.Client(server.url).request("GET", "/transfers/peers") == PEERS
    with pytest.raises(cli.CliError, match="did not answer JSON"):
        cli.Client(server.url).request("GET", "/html")
    assert cli.main(["--url", "not a url", "peers"]) == 2
    assert capsys.readouterr().err.startswith("orthanc-transfers: error: ")


def test_client_options() -> None:
    args = cli.build_parser().parse_args(["--insecure", "--user", "u", "--password", "p",
                                          "--timeout", "7", "--url", "https://h/", "jobs"])
    client = cli.make_client(args)
    assert (client.url, client.timeout) == ("https://h", 7.0)
    assert client.verify is False and client.session.auth == ("u", "p")


@pytest.fixture
def tls_server(server: CannedServer, tmp_path: Path) -> Iterator[tuple[CannedServer, Path]]:
    """``server`` behind TLS with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    httpd = CannedServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd, cert
    httpd.shutdown()
    httpd.server_close()


def test_tls_verification(tls_server: tuple[CannedServer, Path],
                          capsys: pytest.CaptureFixture[str]) -> None:
    httpd, cert = tls_server
    url = "https" + httpd.url[len("http"):]
    assert cli.main(["--url", url, "peers"]) == 2                  # self-signed: refused
    err = capsys.readouterr().err
    assert err.startswith(f"orthanc-transfers: error: TLS error with {url}")
    assert "certificate verify failed" in err and len(err.splitlines()) == 1
    assert cli.main(["--url", url, "--ca-cert", str(cert), "peers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == PEERS
    assert cli.main(["--url", url, "--insecure", "--json", "peers"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == PEERS and err == ""                   # no urllib3 warning
