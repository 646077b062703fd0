"""The plugin's HTTP client (urllib3) against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import contextlib
import json
import pkgutil
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from orthanc_transfers import httpclient
from orthanc_transfers.httpclient import CertificateRefused, HttpPools, Tls, TransportError

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

    def do_POST(self) -> None:
        """An answer cut short: 1000 bytes announced, 500 sent, connection closed."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 500)
        self.wfile.flush()
        self.close_connection = True

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


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The handler behind TLS, with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", cert
    httpd.shutdown()


def test_a_refused_certificate_is_told_apart_from_an_unreachable_server(
        tls_server: tuple[str, Path]) -> None:
    """No retry or outage wait changes a certificate that fails verification."""
    url, cert = tls_server
    with pytest.raises(CertificateRefused, match="CERTIFICATE_VERIFY_FAILED"):
        HttpPools(1).request("GET", url + "/echo", timeout=5)
    assert HttpPools(1).request("GET", url + "/echo", tls=Tls(ca_file=str(cert))).status == 200
    with pytest.raises(TransportError) as unreachable:
        HttpPools(1).request("GET", "https://127.0.0.1:9/", timeout=2)
    assert not isinstance(unreachable.value, CertificateRefused)


def test_an_answer_cut_short_is_a_transport_error(server: str) -> None:
    """Not a short body (urllib3 1.26 would return one): a reset mid-answer is a network
    failure, which a job waits out, not corrupted data."""
    for stop in (None, lambda: None):
        with pytest.raises(TransportError):
            HttpPools(1).request("POST", server + "/short", body=b"", stop=stop)


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
