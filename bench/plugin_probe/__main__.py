"""Command line: ``python3 -m bench.plugin_probe [options]`` from the repository root."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

from devkit.orthanc_server import REPO

from . import __doc__ as PACKAGE_DOC
from .gil import gil_checks
from .imports import imports
from .memory import memory_runs
from .report import markdown, write_json
from .servers import Anomalies, Workspace, log, running
from .versions import platform_info, plugin_has_allow_threads, plugin_settings

MIB = 1024 * 1024

#: ``--allow-threads`` -> the AllowThreads values of the import runs (None: option unset).
ALLOW_CHOICES: dict[str, list[bool | None]] = {
    "both": [False, True], "false": [False], "true": [True], "none": [None]}

#: ``--http`` -> the ImportThroughHttp values of the import runs.
HTTP_CHOICES: dict[str, list[bool]] = {"both": [False, True], "false": [False], "true": [True]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.plugin_probe",
                                     description=(PACKAGE_DOC or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/"
                        "plugin_probe-debian<N>.json)")
    parser.add_argument("--parts", default="gil,memory,imports",
                        help="comma-separated: gil, memory, imports")
    parser.add_argument("--puts", type=int, default=50, help="requests per memory batch")
    parser.add_argument("--put-mib", type=float, default=8.0, help="body size, MiB")
    parser.add_argument("--batches", type=int, default=3, help="memory batches per server")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds after a batch")
    parser.add_argument("--memory-targets", default="unknown-tx,push-tx,minimal,core",
                        help="comma-separated: unknown-tx, push-tx, minimal, core")
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--multiframe-mb", type=float, default=0.0,
                        help="add one multi-frame instance of this size to the study")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commit-threads", type=int, default=4)
    parser.add_argument("--allow-threads", choices=["auto", "false", "true", "both"],
                        default="auto", help="auto: both where the plugin has the option")
    parser.add_argument("--http", choices=["both", "false", "true"], default="both",
                        help="ImportThroughHttp values")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="wait up to this long for other processes to calm down")
    parser.add_argument("--timeout", type=float, default=300.0, help="per pull job")
    parser.add_argument("--gil-sleep", type=float, default=1.0)
    return parser.parse_args(argv)


def new_document(args: argparse.Namespace, argv: list[str] | None,
                 ws: Workspace) -> dict[str, Any]:
    return {
        "tool": "bench.plugin_probe",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "plugin_copy_fingerprint": ws.fingerprint,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def read_platform(ws: Workspace, anomalies: Anomalies, document: dict[str, Any]) -> bool:
    """Platform and plugin settings into ``document``; whether the plugin has AllowThreads."""
    with running("info", ws.plugin_script, anomalies, "platform info") as server:
        document["platform"] = platform_info(server)
        document["plugin_settings"] = plugin_settings(server)
    platform = document["platform"]
    version = str(platform["python_plugin_version"])
    has_allow = plugin_has_allow_threads(version)
    platform["plugin_has_allow_threads"] = has_allow
    log(f"platform: {platform['os']}, Orthanc {platform['orthanc_version']}, Python plugin "
        f"{version}, {platform['embedded_python_library']}")
    return has_allow


def run_parts(args: argparse.Namespace, ws: Workspace, anomalies: Anomalies,
              document: dict[str, Any], has_allow: bool) -> None:
    parts = set(args.parts.split(","))
    if "gil" in parts:
        document["gil_check"] = gil_checks(ws, anomalies, has_allow)
    if "memory" in parts:
        document["memory"] = memory_runs(
            ws, anomalies, args.memory_targets.split(","),
            body=os.urandom(int(args.put_mib * MIB)), puts=args.puts, batches=args.batches,
            settle=args.settle)
    if "imports" in parts:
        choice = args.allow_threads
        if choice == "auto":
            choice = "both" if has_allow else "none"
        document["imports"] = imports(
            ws, anomalies, allow_values=ALLOW_CHOICES[choice],
            http_values=HTTP_CHOICES[args.http], instances=args.instances,
            multiframe_mb=args.multiframe_mb, repeat=args.repeat,
            commit_threads=args.commit_threads, quiet_wait=args.quiet_wait,
            timeout=args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    anomalies = Anomalies()
    ws = Workspace(args.gil_sleep)
    started = time.time()
    document = new_document(args, argv, ws)
    try:
        has_allow = read_platform(ws, anomalies, document)
        out = args.out or (REPO / "bench" / "results" /
                           f"plugin_probe-debian{document['platform']['os_version_id']}.json")
        run_parts(args, ws, anomalies, document, has_allow)
    finally:
        document["anomalies"] = anomalies.items
        document["duration_s"] = round(time.time() - started, 1)
        ws.close()
    write_json(out, document)
    print(markdown(document))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
