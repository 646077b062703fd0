"""Vary the plugin's settings on one link: ``python3 -m bench.sweep [options]``.

Runs every combination of ``--threads`` x ``--bucket-kb`` x ``--gzip-level`` for each
method on one profile (fresh servers per run, as in :mod:`bench.run`) and prints one
row per run with the time split of :func:`bench.measure.phases`. Level 6 is the
plugin as it is; any other level loads it through :mod:`bench.plugin_shim`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from devkit.wan_proxy import PROFILES

from . import report
from .methods import METHODS
from .runner import RunResult, run_once
from .study import SIZES, build_study

PLUGIN_LEVEL = 6


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def _row(r: RunResult) -> str:
    p = r.phases or {}
    t = r.settings.get("transfers", {})
    cells = [str(t.get("Threads", 4)), str(t.get("BucketSize", 4096)),
             str(r.settings.get("gzip_level")), r.method]
    if r.status != "ok":
        return "| " + " | ".join([*cells, r.status.upper(), (r.error or "")[:120]]) + " |"
    wire = (r.wire_bytes or 0) / 1e6

    def num(key: str) -> str:
        value = p.get(key)
        return f"{value:.2f}" if isinstance(value, int | float) else "n/a"

    cells += [f"{r.seconds:.2f}", f"{r.mb_s:.1f}", f"{wire:.1f}",
              f"{r.link_pct:.0f} %" if r.link_pct is not None else "n/a",
              f"{num('before_s')} / {num('data_s')} / {num('after_s')}",
              f"{num('link_busy_pct')} %",
              f"{num('cpu_src_data_cores')} / {num('cpu_dst_data_cores')}",
              f"{r.cpu_src_s_per_gb} / {r.cpu_dst_s_per_gb}",
              f"{(r.cpu_other_s or 0) / (r.seconds or 1):.2f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.sweep", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="wan100")
    parser.add_argument("--methods", default="push-gzip,pull-gzip")
    parser.add_argument("--threads", type=_ints, default=[4])
    parser.add_argument("--bucket-kb", type=_ints, default=[4096])
    parser.add_argument("--gzip-level", type=_ints, default=[PLUGIN_LEVEL])
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "sweep.json")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    methods = [METHODS[m] for m in args.methods.split(",")]
    study = build_study(*SIZES[args.size], label=args.size)
    print(f"study: {study.describe()}; profile {args.profile}", flush=True)
    head = ("| Threads | BucketSize KiB | zlib | method | s | MB/s | wire MB | % link limit "
            "| before / bulk / after s | link busy in bulk | cores src/dst in bulk "
            "| CPU s/GB src/dst | other cores |")
    lines = [head, "|" + "---|" * 13]
    results = []
    for threads, bucket, level, method in itertools.product(
            args.threads, args.bucket_kb, args.gzip_level, methods):
        if level != PLUGIN_LEVEL and method.name.endswith("-none"):
            continue
        result = run_once(PROFILES[args.profile], method, study,
                          transfers={"Threads": threads, "BucketSize": bucket},
                          gzip_level=None if level == PLUGIN_LEVEL else level,
                          max_quiet_wait=args.quiet_wait)
        result.settings["gzip_level"] = level
        results.append(result)
        lines.append(_row(result))
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report.write_json(args.json, machine=report.machine_info(),
                      study={"description": study.describe(), "bytes": study.size},
                      settings={"argv": sys.argv[1:] if argv is None else argv},
                      results=results, all_runs=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
