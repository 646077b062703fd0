"""Security on real servers: credentials, custom peer headers, HTTPS with a private CA,
and the option that restricts chunk reads to announced transfers."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devkit.orthanc_server import OrthancServer, resources
from devkit.wan_proxy import WanProxy

ALICE = ("alice", "alice-secret")
BOB = ("bob", "bob-secret")


@pytest.fixture
def servers() -> Iterator[list[OrthancServer]]:
    started: list[OrthancServer] = []
    yield started
    for server in started:
        server.cleanup()


@pytest.fixture
def proxies() -> Iterator[list[WanProxy]]:
    started: list[WanProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def start(servers: list[OrthancServer], server: OrthancServer) -> OrthancServer:
    servers.append(server)
    return server.start()


def test_every_route_needs_credentials_and_peers_use_theirs(servers: list[OrthancServer],
                                                            study_files: list[bytes]) -> None:
    a = OrthancServer("a", config={"AuthenticationEnabled": True,
                                   "RegisteredUsers": dict([ALICE])})
    b = OrthancServer("b", config={"AuthenticationEnabled": True,
                                   "RegisteredUsers": dict([BOB])})
    # Both forms of OrthancPeers: the legacy array and the object.
    a.config["OrthancPeers"] = {"b": [b.url + "/", *BOB]}
    b.config["OrthancPeers"] = {"a": {"Url": a.url + "/", "Username": ALICE[0],
                                      "Password": ALICE[1]}}
    start(servers, a)
    start(servers, b)
    ids = a.upload(study_files[:6])
    anonymous = requests.Session()
    for method, path in [("GET", "/transfers/peers"), ("POST", "/transfers/lookup"),
                         ("GET", f"/transfers/chunks/{ids[0]}"), ("POST", "/transfers/send"),
                         ("POST", "/transfers/pull"), ("POST", "/transfers/push"),
                         ("GET", "/jobs"), ("GET", "/plugins")]:
        assert anonymous.request(method, a.url + path, data=b"[]").status_code == 401, path
    assert a.get_json("/transfers/peers") == {"b": "installed"}
    push = a.wait_job(a.post("/transfers/send", json={
        "Resources": resources("Instance", *ids), "Peer": "b",
        "Compression": "gzip"}).json()["ID"])
    assert push["State"] == "Success", push
    b.wipe()
    pull = b.wait_job(b.post("/transfers/pull", json={
        "Resources": resources("Instance", *ids), "Peer": "a",
        "Compression": "none"}).json()["ID"])
    assert pull["State"] == "Success", pull
    assert b.instance_md5s() == a.instance_md5s()


HEADER_FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if string.sub(uri, 1, 11) == '/transfers/' then
    return httpHeaders['x-transfers-token'] == 's3cret'
  end
  return true
end
"""


def test_peer_http_headers_are_sent(servers: list[OrthancServer], tmp_path: Path,
                                    study_files: list[bytes]) -> None:
    lua = tmp_path / "filter.lua"
    lua.write_text(HEADER_FILTER)
    b = OrthancServer("b", config={"LuaScripts": [str(lua)]})
    a = OrthancServer("a")
    a.config["OrthancPeers"] = {
        "b": {"Url": b.url + "/", "HttpHeaders": {"X-Transfers-Token": "s3cret"}},
        "b-without-token": {"Url": b.url + "/"}}
    start(servers, b)
    start(servers, a)
    ids = a.upload(study_files[:4])
    body = {"Resources": resources("Instance", *ids), "Compression": "gzip"}
    refused = a.wait_job(a.post("/transfers/send",
                                json={**body, "Peer": "b-without-token"}).json()["ID"])
    assert refused["State"] == "Failure"
    assert refused["Content"]["FailureReason"]["Status"] == 403
    done = a.wait_job(a.post("/transfers/send", json={**body, "Peer": "b"}).json()["ID"])
    assert done["State"] == "Success", done
    assert b.instance_md5s() == a.instance_md5s()


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=Transfers test CA", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    bundle = directory / "server.pem"           # certificate + key in one file
    bundle.write_text((directory / "server.crt").read_text()
                      + (directory / "server.key").read_text())
    return directory / "ca.pem", bundle


@pytest.mark.parametrize("trust", ["ca", "none", "no-verify"])
def test_https_peer_with_a_private_ca(servers: list[OrthancServer], tmp_path: Path,
                                      study_files: list[bytes], trust: str,
                                      proxies: list[WanProxy]) -> None:
    ca, bundle = make_certificates(tmp_path)
    b = OrthancServer("b")
    sender_config: dict[str, Any] = {"ca": {"HttpsCACertificates": str(ca)},
                                     "none": {},
                                     "no-verify": {"HttpsVerifyPeers": False}}[trust]
    a = OrthancServer("a", config=sender_config)
    start(servers, b)
    # Orthanc 1.10.1's own HTTPS server crashes on this platform (segfault after the
    # handshake), so b is reached through a TLS-terminating reverse proxy, as in most
    # deployments.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(bundle)
    front = WanProxy(b.http_port, tls=context).start()
    proxies.append(front)
    a.config["OrthancPeers"] = {"b": {"Url": front.url}}
    start(servers, a)
    ids = a.upload(study_files[:4])
    job = a.wait_job(a.post("/transfers/send", json={
        "Resources": resources("Instance", *ids), "Peer": "b",
        "Compression": "gzip"}).json()["ID"])
    if trust == "none":                      # an unknown CA is refused, and says why
        assert job["State"] == "Failure"
        assert "CERTIFICATE_VERIFY_FAILED" in job["Content"]["FailureReason"]["Message"]
        assert b.get_json("/instances") == []
    else:
        assert job["State"] == "Success", job
        assert b.instance_md5s() == a.instance_md5s()


def test_chunks_can_be_restricted_to_announced_transfers(servers: list[OrthancServer],
                                                         study_files: list[bytes]) -> None:
    a = OrthancServer("a", config={"Transfers": {"RestrictChunksToTransfers": True}})
    b = OrthancServer("b")
    a.config["OrthancPeers"] = {"b": {"Url": b.url + "/"}}
    b.config["OrthancPeers"] = {"a": {"Url": a.url + "/"}}
    start(servers, a)
    start(servers, b)
    ids = a.upload(study_files[:4])
    refused = a.get(f"/transfers/chunks/{ids[0]}")
    assert refused.status_code == 403 and "announced" in refused.json()["Message"]
    job = b.wait_job(b.post("/transfers/pull", json={
        "Resources": resources("Instance", *ids[:3]), "Peer": "a",
        "Compression": "gzip"}).json()["ID"])
    assert job["State"] == "Success"
    assert a.get(f"/transfers/chunks/{ids[0]}").status_code == 200     # announced now
    assert a.get(f"/transfers/chunks/{ids[3]}").status_code == 403     # never announced
