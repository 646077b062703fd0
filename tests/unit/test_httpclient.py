"""The plugin's HTTP client (urllib3) against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import contextlib
import json
import pkgutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from orthanc_transfers import httpclient
from orthanc_transfers.httpclient import HttpPools, Tls, TransportError

PLUGIN = Path(__file__).resolve().parents[2] / "plugin"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client dropped the connection (stop test)
            super().handle()

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Set-Cookie", "a=1; Path=/")
        self.send_header("Set-Cookie", "b=2; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/big":
            self._answer(200, b"x" * (4 * httpclient.PIECE))
            return
        echo = {"path": self.path, "authorization": self.headers.get("Authorization"),
                "port": self.connection.getpeername()[1]}
        self._answer(404 if self.path == "/missing" else 200, json.dumps(echo).encode(),
                     {"Content-Type": "application/json", "X-Echo": "yes"})

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(200, json.dumps({"length": len(body),
                                      "first": body[:1].decode()}).encode())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_answers_carry_status_body_headers_and_cookies(server: str) -> None:
    answer = HttpPools(2).request("GET", server + "/echo?x=1", auth=("alice", "s3cret"))
    assert answer.status == 200 and answer.headers["x-echo"] == "yes"
    echo = json.loads(answer.body)
    assert echo["path"] == "/echo?x=1"
    assert echo["authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert answer.cookies == "a=1; b=2"
    assert HttpPools(2).request("GET", server + "/missing").status == 404   # not raised


def test_connections_are_reused(server: str) -> None:
    pools = HttpPools(2)
    ports = {json.loads(pools.request("GET", server + "/echo").body)["port"] for _ in range(5)}
    assert len(ports) == 1


def test_bodies_go_out_whole_also_when_stoppable(server: str) -> None:
    data = b"y" * (3 * httpclient.PIECE + 7)
    for stop in (None, lambda: None):
        answer = HttpPools(2).request("PUT", server + "/put", body=data, stop=stop)
        assert json.loads(answer.body) == {"length": len(data), "first": "y"}


def test_stop_aborts_an_answer_in_flight_and_drops_the_connection(server: str) -> None:
    pools = HttpPools(2)
    calls = 0

    def stop() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        pools.request("GET", server + "/big", stop=stop)
    assert pools.request("GET", server + "/big").body == b"x" * (4 * httpclient.PIECE)


def test_transport_failures_are_transport_errors() -> None:
    with pytest.raises(TransportError, match=r"refused|NewConnectionError"):
        HttpPools(1).request("GET", "http://127.0.0.1:9/", timeout=2)


def test_tls_settings_are_ignored_for_plain_http(server: str) -> None:
    """urllib3 2.x refuses TLS keywords on an http pool (seen on Debian 13)."""
    tls = Tls(verify=False, cert_file="/nonexistent.pem")
    assert HttpPools(1).request("GET", server + "/echo", tls=tls).status == 200


def test_tls_pool_settings() -> None:
    assert Tls(ca_file="/ca.pem").pool_settings()["ca_certs"] == "/ca.pem"
    unverified = Tls(verify=False).pool_settings()
    assert unverified["cert_reqs"] == "CERT_NONE" and unverified["assert_hostname"] is False


def test_the_plugin_never_imports_requests() -> None:
    """Debian 13's charset_normalizer (imported by requests) cannot be initialised twice
    in one process, and /tools/reset imports the plugin a second time: a module of the
    plugin that imported requests would kill Orthanc at every reset."""
    modules = [m.name for m in pkgutil.iter_modules([str(PLUGIN / "orthanc_transfers")])
               if m.name not in ("host", "cli")]        # host needs Orthanc; cli runs outside
    script = (f"import sys; sys.path.insert(0, {str(PLUGIN)!r})\n"
              + "".join(f"import orthanc_transfers.{name}\n" for name in modules)
              + "bad = sorted({'requests', 'charset_normalizer', 'chardet'} & set(sys.modules))\n"
              + "print(bad)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert len(modules) > 20
    assert result.stdout.strip() == "[]"
