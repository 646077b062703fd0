"""What the Python plugin of this platform does to us: memory kept per request body, and the
effect of its ``AllowThreads`` option on imports and on the responsiveness of Python routes.

Why: the plugin runs inside Orthanc's Python plugin, whose versions differ in whether SDK
calls release the GIL (``AllowThreads``, plugin 4.3+) and in what they keep of request
bodies. The README's Platforms section and the "auto" default of ``ImportThroughHttp``
rest on these measurements, on Debian 12 (Orthanc 1.10.1, plugin 4.0) and Debian 13
(Orthanc 1.12.7, plugin 5.0).

    python3 -m bench.plugin_probe                              # Debian 12 (host)
    bash scripts/debian13.sh python3 -m bench.plugin_probe     # Debian 13 (chroot)

Parts (``--parts``): ``gil`` (:mod:`.gil`), ``memory`` (:mod:`.memory`), ``imports``
(:mod:`.imports`). Every measurement starts fresh Orthanc servers on loopback with
``"MaximumStorageCacheSize": 0``, loading a frozen copy of ``plugin/`` (:mod:`.servers`).
Output (:mod:`.report`): Markdown tables on stdout, everything in ``--out`` (default
``bench/results/plugin_probe-debian<N>.json``).
"""
