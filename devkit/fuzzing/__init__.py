"""Support code for fuzzing the plugin's HTTP routes against real Orthanc servers.

The properties themselves live in ``tests/integration/test_fuzz.py``; what they share
lives here, so that another suite (a load test, a fuzzing run against a deployed pair,
a reproduction script for one finding) can reuse it without importing a test module,
as urllib3's ``dummyserver`` does for its own servers:

* :mod:`devkit.fuzzing.calls`: one HTTP request as a :class:`~devkit.fuzzing.calls.Call`,
  the judgement of its answer, and :class:`~devkit.fuzzing.calls.Findings`, which
  collects every failing input and reports the shortest ones of each kind;
* :mod:`devkit.fuzzing.server_state`: what a property checks around its run (the
  server's log, files written outside the staging directory, disk and memory use);
* :mod:`devkit.fuzzing.inputs`: hypothesis strategies of hostile input, the plugin's
  routes with near-valid bodies, and payload encoders (decompression bombs included).
"""
