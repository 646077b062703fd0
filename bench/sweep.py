"""Vary the plugin's settings on one link: ``python3 -m bench.sweep [options]``.

Runs every combination of ``--threads`` x ``--bucket-kb`` x ``--gzip-level`` for each
method on one profile (fresh servers per run, as in :mod:`bench.run`) and prints one
row per run with the time split of :func:`bench.measure.phases`. The values are set in
the ``Transfers`` section of both servers (``Threads``, ``BucketSize``, ``GzipLevel``);
the table shows the effective ones, as logged by the plugin at start-up.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from devkit.wan_proxy import PROFILES

from . import report
from .methods import METHODS, Method
from .runner import RunResult, run_once
from .snapshot import PluginSnapshot, snapshot_plugin
from .study import SIZES, Study, build_study


def _ints(value: str) -> list[int | None]:
    return [int(v) for v in value.split(",") if v.strip()]


def _percent(value: object) -> str:
    return f"{value:.0f} %" if isinstance(value, int | float) else "n/a"


def _row(r: RunResult) -> str:
    p = r.phases or {}
    t = r.settings.get("plugin") or r.settings.get("transfers", {})
    cells = [str(t.get(k, "?")) for k in ("Threads", "BucketSize", "GzipLevel")] + [r.method]
    if r.status != "ok":
        return "| " + " | ".join([*cells, r.status.upper(), (r.error or "")[:120]]) + " |"
    wire = (r.wire_bytes or 0) / 1e6

    def num(key: str) -> str:
        value = p.get(key)
        return f"{value:.2f}" if isinstance(value, int | float) else "n/a"

    cells += [f"{r.seconds:.2f}", f"{r.mb_s:.1f}", f"{wire:.1f}",
              _percent(r.link_pct),
              f"{num('before_s')} / {num('data_s')} / {num('after_s')}",
              _percent(p.get("link_busy_pct")),
              f"{num('cpu_src_data_cores')} / {num('cpu_dst_data_cores')}",
              f"{r.cpu_src_s_per_gb} / {r.cpu_dst_s_per_gb}",
              f"{(r.cpu_other_s or 0) / (r.seconds or 1):.2f}"]
    return "| " + " | ".join(cells) + " |"


def _sweep(args: argparse.Namespace, methods: list[Method], study: Study,
           plugin: PluginSnapshot) -> list[RunResult]:
    head = ("| Threads | BucketSize KiB | zlib | method | s | MB/s | wire MB | % link limit "
            "| before / bulk / after s | link busy in bulk | cores src/dst in bulk "
            "| CPU s/GB src/dst | other cores |")
    lines = [head, "|" + "---|" * 13]
    results = []
    for threads, bucket, level, method in itertools.product(
            args.threads, args.bucket_kb, args.gzip_level, methods):
        if level != args.gzip_level[0] and method.name.endswith("-none"):
            continue      # the level does not matter without compression
        values = {"Threads": threads, "BucketSize": bucket, "GzipLevel": level}
        result = run_once(PROFILES[args.profile], method, study,
                          transfers={k: v for k, v in values.items() if v is not None},
                          plugin=plugin, max_quiet_wait=args.quiet_wait)
        results.append(result)
        lines.append(_row(result))
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.sweep", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="wan100")
    parser.add_argument("--methods", default="push-gzip,pull-gzip")
    parser.add_argument("--threads", type=_ints, default=[None],
                        help="comma-separated values (default: the plugin's)")
    parser.add_argument("--bucket-kb", type=_ints, default=[None])
    parser.add_argument("--gzip-level", type=_ints, default=[None])
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--plugin-rev", metavar="REV",
                        help="git revision of the plugin (default: copy of the working tree)")
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "sweep.json")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    methods = [METHODS[m] for m in args.methods.split(",")]
    study = build_study(*SIZES[args.size], label=args.size)
    print(f"study: {study.describe()}; profile {args.profile}", flush=True)
    plugin = snapshot_plugin(args.plugin_rev)
    print(f"plugin: {plugin.origin}, fingerprint {plugin.fingerprint}", flush=True)
    try:
        machine = report.machine_info(plugin.script)
        results = _sweep(args, methods, study, plugin)
    finally:
        plugin.remove()
    report.write_json(args.json, machine=machine,
                      study={"description": study.describe(), "bytes": study.size},
                      settings={"argv": sys.argv[1:] if argv is None else argv,
                                "plugin_origin": plugin.origin,
                                "plugin_fingerprint": plugin.fingerprint},
                      results=results, all_runs=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
