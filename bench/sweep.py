"""Vary the plugin's settings on one link: ``python3 -m bench.sweep [options]``.

    python3 -m bench.sweep --profile wan100 --size default \\
        --set Threads=4,8,16 --set BucketSize=1024,4096 --methods push-gzip,pull-gzip

Runs every combination of the ``--set`` values (options of the ``Transfers`` section,
set on both servers) for each method on one profile, with fresh servers per run as in
:mod:`bench.run`, and prints one row per run with the time split of
:func:`bench.measure.phases`. The settings columns show the effective values, as the
plugin logged them at start-up.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from devkit.wan_proxy import PROFILES

from . import report
from .methods import METHODS, Method
from .runner import RunResult, median_run, run_once
from .snapshot import PluginSnapshot, snapshot_plugin
from .study import SIZES, Study, build_study

SHOWN = ("Threads", "BucketSize", "GzipLevel", "CommitThreadsCount")


def _setting(text: str) -> tuple[str, list[int]]:
    name, _, values = text.partition("=")
    try:
        return name.strip(), [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=1,2,3, got {text!r}") from None


def _percent(value: object) -> str:
    return f"{value:.0f} %" if isinstance(value, int | float) else "n/a"


def _num(values: dict[str, object], key: str) -> str:
    value = values.get(key)
    return f"{value:.2f}" if isinstance(value, int | float) else "n/a"


def _row(r: RunResult, shown: list[str]) -> str:
    p = r.phases or {}
    effective = r.settings.get("plugin") or r.settings.get("transfers", {})
    cells = [str(effective.get(k, "?")) for k in shown] + [r.method]
    if r.status != "ok" or r.seconds is None:
        return "| " + " | ".join([*cells, r.status.upper(), (r.error or "")[:120]]) + " |"
    seconds = f"{r.seconds:.2f}"
    if len(r.runs_seconds) > 1:
        seconds += f" ({min(r.runs_seconds):.1f}-{max(r.runs_seconds):.1f})"
    cells += [seconds, f"{r.mb_s:.1f}", f"{(r.wire_bytes or 0) / 1e6:.1f}",
              _percent(r.link_pct),
              f"{_num(p, 'before_s')} / {_num(p, 'data_s')} / {_num(p, 'after_s')}",
              _percent(p.get("link_busy_pct")),
              f"{_num(p, 'cpu_src_data_cores')} / {_num(p, 'cpu_dst_data_cores')}",
              f"{r.cpu_src_s_per_gb} / {r.cpu_dst_s_per_gb}",
              f"{(r.cpu_other_s or 0) / r.seconds:.2f}"]
    return "| " + " | ".join(cells) + " |"


def _sweep(args: argparse.Namespace, methods: list[Method], study: Study,
           plugin: PluginSnapshot) -> list[RunResult]:
    grid: dict[str, list[int]] = dict(args.set)
    shown = list(SHOWN) + [k for k in grid if k not in SHOWN]
    head = ("| " + " | ".join(shown) + " | method | s | MB/s | wire MB | % link limit "
            "| before / bulk / after s | link busy in bulk | cores src/dst in bulk "
            "| CPU s/GB src/dst | other cores |")
    lines = [head, "|" + "---|" * (len(shown) + 10)]
    results = []
    for values in itertools.product(*grid.values()):
        transfers: dict[str, Any] = dict(zip(grid, values, strict=True))
        for method in methods:
            result = median_run([
                run_once(PROFILES[args.profile], method, study, transfers=transfers,
                         plugin=plugin, max_quiet_wait=args.quiet_wait)
                for _ in range(args.repeat)])
            results.append(result)
            lines.append(_row(result, shown))
            print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="wan100")
    parser.add_argument("--methods", default="push-gzip,pull-gzip")
    parser.add_argument("--set", type=_setting, action="append", default=[],
                        metavar="NAME=V1,V2", help="a Transfers option and its values")
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median)")
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
