"""The read-side routes on real Orthanc servers: /plugins, peers, lookup, chunks,
bad input, shutdown and /tools/reset."""

from __future__ import annotations

import gzip
import hashlib
import time
import uuid
import zlib
from typing import Any

import pytest
import zstandard

from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, free_port, resources, wait_for
from devkit.wan_proxy import WanProxy

STARTED = "Transfers accelerator started"
UNKNOWN_ID = "01234567-89abcdef-01234567-89abcdef-01234567"


def test_plugins_lists_transfers_for_original_peers(pair: tuple[OrthancServer, OrthancServer]
                                                    ) -> None:
    a, _ = pair
    plugins = a.get_json("/plugins")
    assert "transfers" in plugins and "python" in plugins
    assert a.get_json("/plugins/transfers")["ID"] == "transfers"
    assert a.get_json("/plugins/python")["ID"] == "python"    # the core still answers


def test_peers_are_probed_independently(make_cluster: Any, make_proxy: Any) -> None:
    a, b = make_cluster(["a", "b"], config={"Transfers": {"PeerConnectivityTimeout": 1}})
    plain = OrthancServer("plain", plugin=False).start()
    try:
        silent = make_proxy(b)
        silent.stall()
        a.request("PUT", "/peers/plain", json={"Url": plain.url + "/"}).raise_for_status()
        a.request("PUT", "/peers/dead", json={"Url": f"http://127.0.0.1:{free_port()}/"})
        a.request("PUT", "/peers/silent", json={"Url": silent.url})
        a.request("PUT", "/peers/bidi", json={"Url": b.url + "/", "RemoteSelf": "a"})
        started = time.monotonic()
        statuses = a.get_json("/transfers/peers")
        elapsed = time.monotonic() - started
    finally:
        plain.cleanup()
    assert statuses == {"b": "installed", "plain": "disabled", "dead": "disabled",
                        "silent": "disabled", "bidi": "bidirectional"}
    # The silent peer is given up after PeerConnectivityTimeout (1 s), not HttpTimeout.
    assert elapsed < 10


def test_lookup_describes_every_instance(pair: tuple[OrthancServer, OrthancServer],
                                         study_files: list[bytes]) -> None:
    a, _ = pair
    a.wipe()
    ids = a.upload(study_files)
    study = a.get_json(f"/instances/{ids[0]}/study")["ID"]
    response = a.post("/transfers/lookup", json=resources("Study", study))
    assert response.status_code == 200
    answer = response.json()
    assert [i["ID"] for i in answer["Instances"]] == sorted(set(ids))
    for item in answer["Instances"]:
        data = a.get(f"/instances/{item['ID']}/file").content
        assert item["Size"] == str(len(data))
        assert item["MD5"] == hashlib.md5(data).hexdigest()
    total = sum(len(f) for f in study_files)
    assert answer["CountInstances"] == len(study_files)
    assert answer["TotalSize"] == str(total)
    assert answer["TotalSizeMB"] == (total + 512 * 1024) // (1024 * 1024)
    assert str(uuid.UUID(answer["Originator"])) == answer["Originator"]
    again = a.post("/transfers/lookup", json=resources("Instance", ids[0])).json()
    assert again["Originator"] == answer["Originator"]


def test_chunks_slice_across_instances(pair: tuple[OrthancServer, OrthancServer],
                                       study_files: list[bytes]) -> None:
    a, _ = pair
    a.wipe()
    ids = sorted(a.upload(study_files[:3]))
    files = [a.get(f"/instances/{i}/file").content for i in ids]
    whole = b"".join(files)
    path = "/transfers/chunks/" + ".".join(ids)
    cases = [(0, 0), (0, 100), (len(files[0]) - 10, 20), (len(files[0]) + 5, 0),
             (len(files[0]) + len(files[1]) + 7, 1000), (len(whole) - 3, 100)]
    for offset, size in cases:
        response = a.get(f"{path}?offset={offset}&size={size}&compression=none")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        end = len(whole) if size == 0 else offset + size
        assert response.content == whole[offset:end], (offset, size)
    zipped = a.get(f"{path}?offset=3&size=5000&compression=gzip")
    assert zipped.headers["Content-Type"] == "application/gzip"
    assert gzip.decompress(zipped.content) == whole[3:5003]
    inflater = zlib.decompressobj(31)          # one single gzip member, nothing after it
    assert inflater.decompress(zipped.content) == whole[3:5003]
    assert inflater.eof and not inflater.unused_data


BAD_INPUTS: list[tuple[str, str, Any, int]] = [
    ("POST", "/transfers/lookup", b"not json", 400),
    ("POST", "/transfers/lookup", b"", 400),
    ("POST", "/transfers/lookup", {"Level": "Study", "ID": UNKNOWN_ID}, 400),
    ("POST", "/transfers/lookup", [{"Level": "Study", "ID": 42}], 400),
    ("POST", "/transfers/lookup", [{"Level": "Galaxy", "ID": UNKNOWN_ID}], 400),
    ("POST", "/transfers/lookup", [{"Level": "Instance", "ID": "../../etc/passwd"}], 400),
    ("POST", "/transfers/lookup", [{"Level": "Study", "ID": UNKNOWN_ID}], 404),
    ("POST", "/transfers/lookup", [{"Level": "Instance", "ID": UNKNOWN_ID}], 404),
    ("POST", "/transfers/lookup", [], 400),
    ("GET", f"/transfers/chunks/{UNKNOWN_ID}", None, 404),
    ("GET", f"/transfers/chunks/{UNKNOWN_ID}?compression=zip", None, 400),
    ("GET", f"/transfers/chunks/{UNKNOWN_ID}?compression=None", None, 400),
    ("GET", f"/transfers/chunks/{UNKNOWN_ID}?offset=-1", None, 400),
    ("GET", f"/transfers/chunks/{UNKNOWN_ID}?offset=abc", None, 400),
    ("GET", f"/transfers/chunks/{UNKNOWN_ID}?size=1.5", None, 400),
    ("GET", f"/transfers/chunks/{UNKNOWN_ID}?size=99999999999", None, 400),
    ("GET", "/transfers/chunks/ABCDEF", None, 404),        # not a route of ours: core
    ("GET", "/transfers/chunks/aa..bb", None, 400),
    ("GET", "/transfers/chunks/%2e%2e%2fetc", None, 404),   # normalized by Orthanc
    ("DELETE", "/transfers/lookup", None, 405),
    ("POST", "/transfers/peers", b"{}", 405),
]


def _transfer_bodies(route: str) -> list[tuple[str, str, Any, int]]:
    good = {"Resources": [{"Level": "Study", "ID": UNKNOWN_ID}], "Peer": "b",
            "Compression": "gzip"}
    return [
        ("POST", route, b"{not json", 400),
        ("POST", route, [good], 400),
        ("POST", route, {**good, "Resources": "all"}, 400),
        ("POST", route, {**good, "Resources": []}, 400),
        ("POST", route, {**good, "Resources": [{"Level": "Study"}]}, 400),
        ("POST", route, {**good, "Peer": 12}, 400),
        ("POST", route, {**good, "Peer": "nobody"}, 404),
        ("POST", route, {**good, "Compression": "zip"}, 400),
        ("POST", route, {k: v for k, v in good.items() if k != "Compression"}, 400),
        ("POST", route, {**good, "Priority": "high"}, 400),
        ("POST", route, {**good, "Priority": True}, 400),
        ("POST", route, {**good, "Originator": 5}, 400),
        ("POST", route, {**good, "SenderTransferID": ["x"]}, 400),
        ("POST", route, {**good, "ImportDuringTransfer": "yes"}, 400),
        ("POST", route, {**good, "ImportDuringTransfer": None}, 400),
        ("POST", route, {**good, "SkipStoredInstances": "no"}, 400),
        ("POST", route, {**good, "SkipStoredInstances": 0}, 400),
        ("GET", route, None, 405),
    ]


PUSH_INPUTS: list[tuple[str, str, Any, int]] = [
    ("POST", "/transfers/push", b"[]", 400),
    ("POST", "/transfers/push", {"Instances": [], "Buckets": [], "Compression": "zip"}, 400),
    ("POST", "/transfers/push", {"Instances": [{"ID": UNKNOWN_ID, "Size": 10, "MD5": "0" * 32}],
                                 "Buckets": [], "Compression": "none"}, 400),
    ("POST", "/transfers/push", {"Instances": [{"ID": UNKNOWN_ID, "Size": "10", "MD5": "xyz"}],
                                 "Buckets": [], "Compression": "none"}, 400),
    ("POST", "/transfers/push", {"Instances": [{"ID": UNKNOWN_ID, "Size": "-1", "MD5": "0" * 32}],
                                 "Buckets": [], "Compression": "none"}, 400),
    ("POST", "/transfers/push", {"Instances": [{"ID": UNKNOWN_ID, "Size": str(2**62),
                                                "MD5": "0" * 32}],
                                 "Buckets": [], "Compression": "none"}, 400),
    ("POST", "/transfers/push", {"Instances": [{"ID": UNKNOWN_ID, "Size": "10", "MD5": "0" * 32}],
                                 "Buckets": [[{"ID": UNKNOWN_ID, "Offset": "5", "Size": "6"}]],
                                 "Compression": "none"}, 400),
    ("POST", "/transfers/push", {"Instances": [],
                                 "Buckets": [[{"ID": UNKNOWN_ID, "Offset": "0", "Size": "6"}]],
                                 "Compression": "none"}, 400),
    ("POST", "/transfers/push", {"Instances": [], "Buckets": [], "Compression": "none",
                                 "ImportDuringTransfer": 1}, 400),
    ("PUT", f"/transfers/push/{UNKNOWN_ID}/0", b"abc", 404),
    ("PUT", "/transfers/push/..%2f..%2fetc/0", b"abc", 404),
    ("POST", f"/transfers/push/{UNKNOWN_ID}/commit", b"", 404),
    ("POST", f"/transfers/push/{UNKNOWN_ID}/explode", b"", 404),
    ("DELETE", f"/transfers/push/{UNKNOWN_ID}", None, 404),
    ("GET", f"/transfers/push/{UNKNOWN_ID}", None, 404),
    ("GET", "/transfers/push", None, 405),
    ("GET", f"/jobs/{UNKNOWN_ID}", None, 404),
    ("POST", f"/jobs/{UNKNOWN_ID}/pause", b"", 404),
    ("POST", f"/jobs/{UNKNOWN_ID}/resubmit", b"", 404),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    BAD_INPUTS + _transfer_bodies("/transfers/pull") + _transfer_bodies("/transfers/send")
    + PUSH_INPUTS)
def test_bad_input_gets_a_clear_4xx_json_error(pair: tuple[OrthancServer, OrthancServer],
                                               method: str, path: str, body: Any,
                                               status: int) -> None:
    a, _ = pair
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs["data"] = body
    elif body is not None:
        kwargs["json"] = body
    response = a.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    if status == 405:
        assert response.headers.get("Allow")
        return
    error = response.json()
    assert error["HttpStatus"] == status
    assert error["Message"] and "Traceback" not in response.text
    # One Content-Type, the one of Orthanc's own errors (none on 1.10, text/plain on 1.12).
    core_error = a.request("POST", "/tools/find", data=b"{")
    assert core_error.status_code == 400
    assert response.headers.get("Content-Type") == core_error.headers.get("Content-Type")


def test_bad_peer_configuration_does_not_break_the_others(make_cluster: Any) -> None:
    a, _ = make_cluster(["a", "b"])
    a.request("PUT", "/peers/weird", json={"Url": "not-a-url"})
    statuses = a.get_json("/transfers/peers")
    assert statuses["b"] == "installed" and statuses["weird"] == "disabled"


def test_stop_while_transferring_is_clean(make_cluster: Any, make_proxy: Any,
                                          study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"], config={"Transfers": {"BucketSize": 256}})
    slow = make_proxy(a, _slow_link())
    b.request("PUT", "/peers/a", json={"Url": slow.url}).raise_for_status()
    ids = a.upload(study_files)
    job = b.post("/transfers/pull", json={"Resources": resources("Instance", *ids),
                                          "Peer": "a", "Compression": "none"}).json()["ID"]
    wait_for(lambda: b.get_json(f"/jobs/{job}")["Content"]["CompletedHttpQueries"] > 0, 30,
             "the pull to start moving buckets")
    assert b.stop() == 0          # SIGTERM while workers are busy: no hang, no crash
    assert a.stop() == 0


def test_start_up_log_says_what_the_running_versions_allow(
        pair: tuple[OrthancServer, OrthancServer]) -> None:
    a, _ = pair
    orthanc_version = a.get_json("/system")["Version"]
    plugin = a.get_json("/plugins/python")["Version"]
    log = wait_for(lambda: "Transfers: imports through" in a.log_path.read_text()
                   and a.log_path.read_text(), 30, "the platform report")
    assert f"Transfers: Orthanc {orthanc_version}, Python plugin {plugin}, Python 3." in log
    warns = "WARNING: this Python plugin never frees the bodies" in log
    assert warns == (plugin == "4.0")           # measured: 4.0 keeps them, 5.0 frees them
    allow_threads = a.config.get("Python", {}).get("AllowThreads") is True
    if plugin == "4.0":
        assert "AllowThreads: not available" in log
        assert "imports through http://127.0.0.1:" in log
    else:
        assert ("AllowThreads: on" in log) == allow_threads
        path = "RestApiPost on 4" if allow_threads else "http://127.0.0.1:"
        assert f"imports through {path}" in log


def test_tools_reset_keeps_the_plugin_working(make_cluster: Any,
                                              study_files: list[bytes]) -> None:
    a, b = make_cluster(["a", "b"])
    ids = a.upload(study_files[:3])
    for server in (a, b):
        server.post("/tools/reset")
    for server in (a, b):
        # The reset is asynchronous: wait for the plugin to start a second time.
        wait_for(lambda s=server: s.log_path.read_text().count(STARTED) == 2, 30, "the reset")
        wait_for(lambda s=server: s.get("/system").status_code == 200, 30, "the restart")
        assert "transfers" in server.get_json("/plugins")
    assert a.get_json("/transfers/peers") == {"b": "installed"}
    job = b.post("/transfers/pull", json={"Resources": resources("Instance", *ids),
                                          "Peer": "a", "Compression": "gzip"}).json()["ID"]
    finished = b.wait_job(job)
    assert finished["State"] == "Success", finished
    assert a.stop() == 0 and b.stop() == 0


def _slow_link() -> Any:
    from devkit.wan_proxy import LinkProfile

    return LinkProfile("slow", delay=0.01, bandwidth=40e6)


__all__ = ["WanProxy"]


def test_chunks_stay_wire_compatible_and_adapt_for_our_receivers(
        pair: tuple[OrthancServer, OrthancServer]) -> None:
    a, _ = pair
    a.wipe()
    jpeg = dicom_data.noise_instance()     # does not compress, like JPEG pixel data
    assert len(jpeg) < 1.02 * len(zlib.compress(jpeg, 1))
    instance = a.upload([jpeg])[0]
    path = f"/transfers/chunks/{instance}?offset=0&size=0"
    # What an original receiver asks: gzip is gzip, whatever the data.
    original = a.get(path + "&compression=gzip")
    assert original.headers["Content-Type"] == "application/gzip"
    assert gzip.decompress(original.content) == jpeg
    # A receiver of ours allows plain bytes for data that does not compress.
    adaptive = a.get(path + "&compression=gzip", headers={"X-Transfers-Adaptive": "1"})
    assert adaptive.headers["X-Transfers-Encoding"] == "none"
    assert adaptive.headers["Content-Type"] == "application/octet-stream"
    assert adaptive.content == jpeg
    assert float(adaptive.headers["X-Transfers-Encode-Seconds"]) >= 0
    # Whole answers, never stream answers: the connection stays open for the next bucket.
    assert adaptive.headers["Content-Length"] == str(len(jpeg))
    assert adaptive.headers.get("Connection", "keep-alive").lower() != "close"
    zstd = a.get(path + "&compression=zstd&level=3")
    assert zstd.headers["Content-Type"] == "application/zstd"
    assert zstandard.ZstdDecompressor().decompress(zstd.content) == jpeg
    answer = a.post("/transfers/lookup", json=resources("Instance", instance)).json()
    assert set(answer["Encodings"]) == {"shuffle-zstd", "zstd", "shuffle-xz", "xz", "gzip",
                                        "none"}
