"""The servers a probe runs on, and what they run.

:class:`Workspace` holds a frozen copy of ``plugin/``, the generated probe script
(:data:`PROBE_SCRIPT`) and the slow HTTP server that the GIL check calls from inside
Orthanc. :func:`running` starts one fresh Orthanc (``devkit.orthanc_server``) for one
measurement and, when it stops, records in :class:`Anomalies` a crash, a hang or an error
line of its log. What the platform is (versions) lives in :mod:`.versions`.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from bench.snapshot import fingerprint
from bench.topology import BASE_CONFIG
from devkit.orthanc_server import REPO, OrthancServer, WaitTimeout

#: The generated probe script. Module-level functions only: plugin 4.3+ frees callbacks
#: that only it references without the GIL at shutdown (python-plugin-notes, Debian 13).
PROBE_SCRIPT = '''\
import json
import time
import orthanc


def on_put(output, uri, **request):
    output.AnswerBuffer(b"{}", "application/json")


def on_ping(output, uri, **request):
    output.AnswerBuffer(b"{}", "application/json")


def on_slow(output, uri, **request):
    started = time.perf_counter()
    orthanc.HttpGet(SLOW_URL, "", "")
    output.AnswerBuffer(json.dumps({"Seconds": time.perf_counter() - started}),
                        "application/json")


SLOW_URL = "%(slow_url)s"
orthanc.RegisterRestCallback("/probe/put", on_put)
orthanc.RegisterRestCallback("/probe/ping", on_ping)
orthanc.RegisterRestCallback("/probe/slow", on_slow)
'''

#: Log lines that mean something went wrong: Orthanc's errors, and crashes of the
#: embedded interpreter or of the process.
ERROR_LINE = re.compile(r"^(E\d{4}|.*(Segmentation|Fatal Python|Traceback|core dumped))")

#: Seconds a server may take to start: the machine may be busy with other test runs.
START_TIMEOUT = 90


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Anomalies:
    """Crashes, error lines and surprises, with log excerpts, for the report."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, where: str, what: str, excerpt: str = "") -> None:
        log(f"ANOMALY in {where}: {what}")
        self.items.append({"where": where, "what": what, "log": excerpt})


class _SlowHTTPServer(http.server.ThreadingHTTPServer):
    delay = 0.0


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(cast(_SlowHTTPServer, self.server).delay)
        body = b"slow"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass                                  # the report is on stdout, progress on stderr


class SlowServer:
    """An HTTP server in this process whose every GET answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self._server = _SlowHTTPServer(("127.0.0.1", 0), _SlowHandler)
        self._server.delay = delay
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/slow"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Workspace:
    """A frozen copy of ``plugin/``, the generated probe script, the slow HTTP server.

    Not :func:`bench.snapshot.snapshot_plugin`: it asks git where the copy comes from, and
    the Debian 13 chroot has no git.
    """

    def __init__(self, gil_sleep: float) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tf-plugin-probe-"))
        shutil.copytree(REPO / "plugin", self.directory / "plugin",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        self.plugin_script = self.directory / "plugin" / "transfers.py"
        self.fingerprint = fingerprint(self.directory / "plugin")
        self.slow_delay = gil_sleep
        self.slow = SlowServer(gil_sleep)
        self.probe_script = self.directory / "probe" / "probe_routes.py"
        self.probe_script.parent.mkdir()
        self.probe_script.write_text(PROBE_SCRIPT % {"slow_url": self.slow.url})

    def close(self) -> None:
        self.slow.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def server_config(script: Path, *, allow_threads: bool | None = None,
                  python_path: bool = False, transfers: dict[str, Any] | None = None,
                  peers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Orthanc's configuration over the harness's defaults; ``allow_threads`` None leaves
    the ``AllowThreads`` option out."""
    config: dict[str, Any] = dict(BASE_CONFIG)
    python: dict[str, Any] = {}
    if allow_threads is not None:
        python["AllowThreads"] = allow_threads
    if python_path:
        python["Path"] = str(script)
    else:
        config["PythonScript"] = str(script)
    if python:
        config["Python"] = python
    if transfers:
        config["Transfers"] = transfers
    if peers:
        config["OrthancPeers"] = peers
    return config


def start_server(name: str, script: Path, *, python_path: bool = False,
                 **options: Any) -> OrthancServer:
    """A started server. ``python_path``: ``"Python": {"Path"}`` instead of PythonScript;
    ``options``: those of :func:`server_config`."""
    server = OrthancServer(name, config=server_config(script, python_path=python_path,
                                                      **options))
    if python_path:
        # The harness always sets PythonScript: remove it, or the plugin would run the
        # harness's script and never look at Python.Path.
        del server.config["PythonScript"]
    try:
        server.start(timeout=START_TIMEOUT)
    except BaseException:
        server.cleanup()            # the exception already carries the log's tail
        raise
    return server


def _error_lines(server: OrthancServer, expected: re.Pattern[str] | None) -> list[str]:
    return [line for line in server.log_tail(100000).splitlines() if ERROR_LINE.match(line)
            and not (expected and expected.search(line))]


def stop_server(server: OrthancServer, anomalies: Anomalies, where: str,
                expected_errors: re.Pattern[str] | None = None) -> None:
    """Stop by PID (the harness), record a non-zero exit and unexpected error lines, remove
    the files."""
    try:
        code = server.stop()
    except WaitTimeout as e:
        anomalies.add(where, "server hung on shutdown", str(e)[-3000:])
        code = None
    if code not in (0, None):
        anomalies.add(where, f"Orthanc exited with code {code}", server.log_tail(40))
    errors = _error_lines(server, expected_errors)
    if errors:
        anomalies.add(where, f"{len(errors)} error line(s) in the Orthanc log",
                      "\n".join(errors[:20]))
    server.cleanup()


@contextlib.contextmanager
def running(name: str, script: Path, anomalies: Anomalies, where: str,
            expected_errors: re.Pattern[str] | None = None,
            **options: Any) -> Iterator[OrthancServer]:
    """A fresh server for one measurement; ``where`` names it in the anomalies."""
    server = start_server(name, script, **options)
    try:
        yield server
    finally:
        stop_server(server, anomalies, where, expected_errors)
