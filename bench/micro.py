"""Micro-measurements of single routes and of one transfer on loopback.

    python3 -m bench.micro [--instances 1000] [--json bench/results/micro.json]

Lookup time for many small instances, chunk serving throughput (cached instance, plain
and gzip), and one pull and one push of the integration tests' study (20 CT slices +
a 20 MiB multi-frame) with the receiver's peak RSS. Loopback only, no link emulation:
see ``bench.run`` for the WAN comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, resources, start_cluster


def peak_rss_mb(server: OrthancServer) -> float:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(action: Any, repeat: int = 5) -> float:
    """Median wall time of ``action()`` in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_lookup(server: OrthancServer, count: int) -> dict[str, Any]:
    files = dicom_data.ct_series(count, rows=64, columns=64, patient_id="TF-LOOKUP")
    ids = server.upload(files)
    study = server.get_json(f"/instances/{ids[0]}/study")["ID"]

    def lookup() -> None:
        response = server.post("/transfers/lookup", json=resources("Study", study))
        assert response.status_code == 200 and len(response.json()["Instances"]) == count

    return {"instances": count, "seconds": round(timed(lookup), 3)}


def measure_chunks(server: OrthancServer) -> dict[str, Any]:
    instance = server.upload([dicom_data.multiframe_instance(32.0, patient_id="TF-CHUNKS")])[0]
    size = len(server.get(f"/instances/{instance}/file").content)
    results: dict[str, Any] = {"instance_mb": round(size / 1e6, 1)}
    for compression in ("none", "gzip"):
        uri = f"/transfers/chunks/{instance}?offset=0&size=0&compression={compression}"
        server.get(uri)                                  # warm the cache
        seconds = timed(lambda u=uri: server.get(u).content)
        results[f"{compression}_mb_per_s"] = round(size / 1e6 / seconds, 1)
    return results


def measure_transfers(a: OrthancServer, b: OrthancServer) -> dict[str, Any]:
    files = dicom_data.mixed_study(ct_slices=20, multiframe_mb=20.0)
    ids = a.upload(files)
    size_mb = sum(len(f) for f in files) / 1e6
    results: dict[str, Any] = {"study_mb": round(size_mb, 1), "instances": len(files)}
    for mode, compression in (("pull", "none"), ("pull", "gzip"), ("push", "none"),
                              ("push", "gzip")):
        b.wipe()
        body = {"Resources": resources("Instance", *ids), "Compression": compression}
        started = time.perf_counter()
        if mode == "pull":
            job = b.wait_job(b.post("/transfers/pull", json={**body, "Peer": "a"}).json()["ID"])
        else:
            job = a.wait_job(a.post("/transfers/send", json={**body, "Peer": "b"}).json()["ID"])
        seconds = time.perf_counter() - started
        assert job["State"] == "Success", job
        assert b.instance_md5s() == a.instance_md5s(), mode
        results[f"{mode}_{compression}"] = {"seconds": round(seconds, 2),
                                            "mb_per_s": round(size_mb / seconds, 1)}
    results["receiver_peak_rss_mb"] = round(peak_rss_mb(b), 1)
    results["sender_peak_rss_mb"] = round(peak_rss_mb(a), 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--json", default="bench/results/micro.json")
    args = parser.parse_args()
    config = {"MaximumStorageCacheSize": 0}
    a, b = start_cluster(["a", "b"], config=config)
    try:
        results = {"lookup": measure_lookup(a, args.instances), "chunks": measure_chunks(a)}
        a.wipe()
        results["transfers"] = measure_transfers(a, b)
    finally:
        a.cleanup()
        b.cleanup()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
