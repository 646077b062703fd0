"""The main job, end to end: two local Orthanc peers, sample data, transfers with live
progress and a throughput summary.

    python3 -m devkit.demo [--link lan|wan20|wan100|flaky] [--slices N] [--keep]

Starts ``source`` and ``target`` (the plugin loaded on both, peers declared both ways),
loads a generated CT study (plus a large multi-frame instance and pydicom's sample
files) into ``source``, then moves it three ways: push with gzip, pull without
compression, and Orthanc's own ``/peers/{peer}/store`` for comparison. Every transfer
is checked byte for byte (MD5 of every instance on both sides).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import dicom_data
from .orthanc_server import OrthancServer, resources, start_cluster
from .wan_proxy import PROFILES, WanProxy

BAR = 32


def show_progress(server: OrthancServer, job_id: str, label: str) -> dict[str, Any]:
    """Draw a live progress line until the job ends; return the finished job."""
    started = time.monotonic()
    while True:
        job: dict[str, Any] = server.get_json(f"/jobs/{job_id}")
        progress = int(job.get("Progress", 0))
        content = job.get("Content", {})
        filled = BAR * progress // 100
        speed = content.get("NetworkSpeedKBs", 0) / 1024
        line = (f"\r  {label:<22} [{'#' * filled}{'.' * (BAR - filled)}] {progress:3d}%  "
                f"{content.get('Phase', job['State']):<10} {speed:7.1f} MB/s on the wire  "
                f"{time.monotonic() - started:5.1f}s")
        sys.stdout.write(line)
        sys.stdout.flush()
        if job["State"] in ("Success", "Failure"):
            sys.stdout.write("\n")
            return job
        time.sleep(0.2)


def run(link: str, slices: int, keep: bool) -> int:
    print(f"Generating a CT study of {slices} slices + a 30 MiB multi-frame instance ...")
    files = [*dicom_data.ct_series(slices), dicom_data.multiframe_instance(30.0)]
    files += dicom_data.pydicom_samples()
    size_mb = sum(len(f) for f in files) / 1e6
    print(f"  {len(files)} instances, {size_mb:.1f} MB, gzip ratio "
          f"{dicom_data.gzip_ratio(files):.2f}")
    source, target = start_cluster(["source", "target"])
    proxies: list[WanProxy] = []
    try:
        if link != "lan":
            for server, peer_of, name in ((target, source, "target"),
                                          (source, target, "source")):
                proxy = WanProxy(server.http_port, PROFILES[link]).start()
                proxies.append(proxy)
                peer_of.request("PUT", f"/peers/{name}", json={"Url": proxy.url})
        print(f"Orthanc peers: source {source.url}  target {target.url}  (link: {link})")
        print(f"  source sees its peers as {source.get_json('/transfers/peers')}")
        ids = source.upload(files)
        wanted = resources("Instance", *ids)
        reference = source.instance_md5s()
        results = []
        starts = (("push, gzip", source, "/transfers/send", "target", "gzip"),
                  ("pull, no compression", target, "/transfers/pull", "source", "none"))
        for label, owner, route, peer, compression in starts:
            target.wipe()
            started = time.monotonic()
            answer = owner.post(route, json={"Resources": wanted, "Peer": peer,
                                             "Compression": compression}).json()
            job = show_progress(owner, answer["ID"], label)
            seconds = time.monotonic() - started
            identical = target.instance_md5s() == reference
            results.append((label, job["State"], seconds, identical))
        target.wipe()
        started = time.monotonic()
        store = source.post("/peers/target/store",
                            json={"Resources": ids, "Synchronous": True}, timeout=600)
        seconds = time.monotonic() - started
        results.append(("Orthanc /peers/store", "Success" if store.ok else "Failure", seconds,
                        target.instance_md5s() == reference))
        print(f"\n{'method':<24}{'state':<9}{'seconds':>8}{'MB/s':>8}  byte-identical")
        for label, state, seconds, identical in results:
            print(f"{label:<24}{state:<9}{seconds:8.2f}{size_mb / seconds:8.1f}  {identical}")
        ok = all(state == "Success" and identical for _, state, _, identical in results)
        if keep:
            print("\n--keep: servers stay up; press Ctrl-C to stop them.")
            while True:
                time.sleep(3600)
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proxy in proxies:
            proxy.stop()
        for server in (source, target):
            server.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--link", choices=sorted(PROFILES), default="lan")
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--keep", action="store_true", help="leave the servers running")
    args = parser.parse_args()
    return run(args.link, args.slices, args.keep)


if __name__ == "__main__":
    sys.exit(main())
