"""Our encodings between two real servers: byte-identical whatever the data, and each
bucket encoded as its data and the link call for (what the job's Content reports)."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, resources
from devkit.wan_proxy import LinkProfile

#: Thin enough that the chooser compresses as hard as the cores allow.
THIN = LinkProfile("thin", delay=0.02, bandwidth=20e6)
#: Small buckets, so that the noise instance fills buckets of its own.
CONFIG = {"Transfers": {"BucketSize": 256}}


@pytest.fixture(scope="module")
def mixed_files() -> list[bytes]:
    """16-bit CT and MR, a 2 MiB instance of noise (like JPEG data) and pydicom's files."""
    return (dicom_data.ct_series(6, seed=5) + dicom_data.mr_series(6, seed=5)
            + [dicom_data.noise_instance(rows=1024, columns=1024, seed=5)]
            + dicom_data.pydicom_samples())


def start_pair(make_cluster: Any, make_proxy: Any) -> tuple[OrthancServer, OrthancServer]:
    a, b = make_cluster(["a", "b"], config=CONFIG)
    for server, peer in ((a, b), (b, a)):
        link = make_proxy(peer, THIN)
        server.request("PUT", f"/peers/{peer.name}", json={"Url": link.url}).raise_for_status()
    return a, b


def buckets_by_encoding(content: dict[str, Any]) -> dict[str, int]:
    return {name: counts["Buckets"] for name, counts in content["Encodings"].items()}


@pytest.mark.parametrize("mode", ["push", "pull"])
def test_thin_link_shuffles_pixels_and_sends_noise_plain(make_cluster: Any, make_proxy: Any,
                                                         mixed_files: list[bytes],
                                                         mode: str) -> None:
    a, b = start_pair(make_cluster, make_proxy)
    ids = a.upload(mixed_files)
    query = {"Resources": resources("Instance", *ids), "Compression": "gzip"}
    if mode == "push":
        job_id = a.post("/transfers/send", json={**query, "Peer": "b"}).json()["ID"]
        job = a.wait_job(job_id)
    else:
        job_id = b.post("/transfers/pull", json={**query, "Peer": "a"}).json()["ID"]
        job = b.wait_job(job_id)
    assert job["State"] == "Success", job
    assert b.instance_md5s() == a.instance_md5s()
    counts = buckets_by_encoding(job["Content"])
    assert sum(counts.values()) == job["Content"]["TotalBuckets"]
    shuffled = sum(n for name, n in counts.items() if name.startswith("shuffle-"))
    assert shuffled >= 10, counts                 # CT and MR pixel data
    assert counts.get("none", 0) >= 4, counts     # 2 MiB of noise in 256 KiB buckets
    plain = job["Content"]["Encodings"]["none"]
    assert plain["WireBytes"] == plain["Bytes"]
    wire = sum(c["WireBytes"] for c in job["Content"]["Encodings"].values())
    raw = sum(c["Bytes"] for c in job["Content"]["Encodings"].values())
    assert raw == sum(len(f) for f in mixed_files) and wire < raw


def test_chunks_route_serves_every_encoding_and_adapts(pair: Any) -> None:
    from orthanc_transfers.encoding import Encoding, decode

    a, _ = pair
    a.wipe()
    ct, noise = dicom_data.ct_series(1, seed=9)[0], dicom_data.noise_instance(seed=9)
    text = dicom_data.pydicom_samples()[1]           # rtplan: no pixel data to shuffle
    ids = a.upload([ct, noise, text])
    for instance, data in zip(ids, (ct, noise, text), strict=True):
        for name in ("shuffle-zstd", "shuffle-xz", "xz", "zstd"):
            path = f"/transfers/chunks/{instance}?offset=1&size={len(data) - 1}"
            asked = a.get(f"{path}&compression={name}&level=1")
            assert asked.status_code == 200, asked.text
            assert decode(asked.content, Encoding(name), len(data) - 1) == data[1:]
    adapted = {}
    for instance, data in zip(ids, (ct, noise, text), strict=True):
        answer = a.get(f"/transfers/chunks/{instance}?compression=shuffle-xz&level=0",
                       headers={"X-Transfers-Adaptive": "1"})
        encoding = Encoding(answer.headers["X-Transfers-Encoding"])
        assert decode(answer.content, encoding, len(data)) == data
        # The source's own time (read + encode) is what a receiver takes out of the
        # request's time to measure the link; it includes the encoding's CPU time.
        assert float(answer.headers["X-Transfers-Server-Seconds"]) >= 0
        assert float(answer.headers["X-Transfers-Encode-Seconds"]) >= 0
        adapted[instance] = encoding
    assert [adapted[i] for i in ids] == [Encoding.SHUFFLE_XZ, Encoding.NONE, Encoding.XZ]
    # An original receiver still gets a gzip member, whatever the data.
    assert gzip.decompress(a.get(f"/transfers/chunks/{ids[0]}?compression=gzip").content) == ct
    refused = a.get(f"/transfers/chunks/{ids[0]}?compression=brotli")
    assert refused.status_code == 400 and "shuffle-zstd" in refused.json()["Message"]
