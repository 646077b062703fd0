"""Benchmark of the transfers accelerator against Orthanc's own ways of sending a study.

``python3 -m bench.run`` (from the repository root) starts a fresh source/target pair of
Orthanc servers per (link profile, method), puts a :class:`devkit.wan_proxy.WanProxy` on
every server-to-server path, moves one study and reports time, throughput, bytes on the
wire, peak memory and CPU. ``python3 -m bench.sweep`` varies the plugin's settings.
"""
