"""Benchmark: ``python3 -m bench.run [options]`` from the repository root.

For each link profile and method, a fresh source/target pair is started (plugin and
DICOMweb on both, no storage cache), the study is uploaded to the source, then moved to
the target and checked byte-identical. See ``--help`` and ``bench/README.md``.

Without any option this is the quick run (profiles lan and wan20, the ~61 MB "small"
study, every method): a few minutes on 2 cores. ``--full`` runs every profile and
method on the ~168 MB "default" study.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from devkit.wan_proxy import PROFILES

from . import report
from .methods import METHODS
from .runner import RunResult, compare_to_peers_store, median_run, run_once
from .snapshot import PluginSnapshot, snapshot_plugin
from .study import SIZES, Study, build_study

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
QUICK_PROFILES = ["lan", "wan20"]


def _names(value: str, known: dict[str, Any], what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {unknown or value!r}; choose from {', '.join(known)}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.run", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = ", ".join(f"{k} ({v[0]} CT slices + {v[1]:g} MiB multi-frame)"
                      for k, v in SIZES.items())
    parser.add_argument("--size", choices=SIZES, help=f"study size: {sizes}; "
                        "default: small, or default with --full")
    parser.add_argument("--slices", type=int, help="CT slices (overrides --size)")
    parser.add_argument("--multiframe-mb", type=float,
                        help="MiB of multi-frame data, in instances of at most 40 MiB")
    parser.add_argument("--profiles", type=lambda v: _names(v, PROFILES, "profile"),
                        help=f"comma-separated, from {', '.join(PROFILES)} "
                             f"(default: {','.join(QUICK_PROFILES)})")
    parser.add_argument("--methods", type=lambda v: _names(v, METHODS, "method"),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per (profile, method); the median run is reported")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--full", action="store_true",
                        help="all profiles and methods, default study size")
    parser.add_argument("--threads", type=int, help="Transfers.Threads on both servers")
    parser.add_argument("--bucket-kb", type=int, help="Transfers.BucketSize (KiB) on both")
    parser.add_argument("--gzip-level", type=int, choices=range(0, 10), metavar="0-9",
                        help="Transfers.GzipLevel on both servers")
    parser.add_argument("--plugin-rev", metavar="REV",
                        help="benchmark the plugin of this git revision (default: a copy of "
                             "the working tree taken at start)")
    parser.add_argument("--quiet-wait", type=float, default=30.0, metavar="SECONDS",
                        help="before each run, wait up to this long until other processes "
                             "use < 0.25 cores (default 30; 0 = never wait)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.full:
        args.profiles = args.profiles or list(PROFILES)
        args.methods = args.methods or list(METHODS)
    args.profiles = args.profiles or QUICK_PROFILES
    args.methods = args.methods or list(METHODS)
    size = args.size or ("default" if args.full else "small")
    slices, multiframe_mb = SIZES[size]
    custom = args.slices is not None or args.multiframe_mb is not None
    args.slices = slices if args.slices is None else args.slices
    args.multiframe_mb = multiframe_mb if args.multiframe_mb is None else args.multiframe_mb
    args.size_label = "custom" if custom else size
    return args


def transfers_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if args.threads is not None:
        settings["Threads"] = args.threads
    if args.bucket_kb is not None:
        settings["BucketSize"] = args.bucket_kb
    if args.gzip_level is not None:
        settings["GzipLevel"] = args.gzip_level
    return settings


def study_summary(study: Study) -> dict[str, Any]:
    return {"label": study.label, "description": study.describe(), "bytes": study.size,
            "instances": len(study.files), "ct_slices": study.slices,
            "multiframe_mib": study.multiframe_sizes,
            "gzip_ratio_zlib6": round(study.gzip_ratio, 3),
            "build_seconds": round(study.build_seconds, 1)}


def run_all(args: argparse.Namespace, study: Study, transfers: dict[str, Any],
            plugin: PluginSnapshot) -> tuple[list[RunResult], list[RunResult]]:
    """Every (profile, method), ``--repeat`` times; returns (medians, every run)."""
    results: list[RunResult] = []
    all_runs: list[RunResult] = []
    for profile_name in args.profiles:
        for method_name in args.methods:
            runs = []
            for _ in range(args.repeat):
                run = run_once(PROFILES[profile_name], METHODS[method_name], study,
                               transfers=transfers, plugin=plugin,
                               max_quiet_wait=args.quiet_wait)
                runs.append(run)
                state = f"{run.seconds:.2f} s" if run.status == "ok" else \
                    f"{run.status}: {(run.error or '').splitlines()[0][:200]}"
                print(f"  {profile_name:7s} {method_name:12s} {state}", flush=True)
            all_runs.extend(runs)
            results.append(median_run(runs))
    return results, all_runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    study = build_study(args.slices, args.multiframe_mb, args.size_label)
    print(f"study ({study.label}): {study.describe()}", flush=True)
    if not 2.0 <= study.gzip_ratio <= 3.0:
        print(f"WARNING: gzip ratio {study.gzip_ratio:.2f} is outside 2-3: the study does not "
              "compress like real CT", flush=True)
    transfers = transfers_settings(args)
    print(f"profiles {','.join(args.profiles)}; methods {','.join(args.methods)}; "
          f"repeat {args.repeat}; Transfers {transfers or 'defaults'}", flush=True)
    plugin = snapshot_plugin(args.plugin_rev)
    print(f"plugin: {plugin.origin}, fingerprint {plugin.fingerprint}", flush=True)
    started = time.monotonic()
    try:
        machine = report.machine_info(plugin.script)
        results, all_runs = run_all(args, study, transfers, plugin)
    finally:
        plugin.remove()
    compare_to_peers_store(results)
    print(f"\n{study.describe()}; {time.monotonic() - started:.0f} s of benchmark\n")
    print(report.markdown_table(results))
    phases = report.phases_table(results)
    if phases:
        print("\nWhere the time goes (WAN runs; windows cut at 2 % and 98 % of wire bytes):\n")
        print(phases)
    settings = {"profiles": args.profiles, "methods": args.methods, "repeat": args.repeat,
                "quiet_wait": args.quiet_wait, "plugin_origin": plugin.origin,
                "plugin_fingerprint": plugin.fingerprint,
                "transfers": transfers,
                "argv": sys.argv[1:] if argv is None else argv}
    report.write_json(args.json, machine=machine, study=study_summary(study),
                      settings=settings, results=results, all_runs=all_runs)
    effective = next((r.settings["plugin"] for r in all_runs if r.settings.get("plugin")), None)
    if effective:
        shown = ("Threads", "BucketSize", "GzipLevel", "CacheSize", "CommitThreadsCount")
        print(f"\nplugin: {plugin.origin}, fingerprint {plugin.fingerprint}; settings (source's "
              "start-up log): " + ", ".join(f"{k} {effective[k]}" for k in shown if k in effective))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
