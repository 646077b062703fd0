"""Does the Python plugin release the GIL during an SDK call? (part ``gil``)

The generated probe script (:data:`.servers.PROBE_SCRIPT`) registers ``/probe/slow``, which
calls ``orthanc.HttpGet`` on a URL of this process that answers after ``--gil-sleep``
seconds, and ``/probe/ping``, which answers at once. While a slow call runs, pings are
timed: if the plugin holds the GIL during SDK calls they wait for the slow call; with
``AllowThreads`` they do not. Run with ``PythonScript``, and on plugins that have
``AllowThreads`` also with ``"Python": {"Path": ...}``, to see which spelling the option
needs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from .servers import Anomalies, Workspace, log, running

#: Pings timed at most while one slow call runs.
PINGS = 100

#: Pings faster than this share of the slow call's delay were served during the call.
RELEASED_SHARE = 0.25


def gil_configurations(has_allow_threads: bool) -> list[tuple[str, dict[str, Any]]]:
    """(name, options of :func:`.servers.start_server`) of each server to check."""
    if has_allow_threads:
        return [
            ("PythonScript", {}),
            ("PythonScript + Python.AllowThreads false", {"allow_threads": False}),
            ("PythonScript + Python.AllowThreads true", {"allow_threads": True}),
            ("Python.Path + Python.AllowThreads true",
             {"allow_threads": True, "python_path": True}),
        ]
    return [("PythonScript", {}),
            ("PythonScript + Python.AllowThreads true (ignored?)", {"allow_threads": True})]


def gil_checks(ws: Workspace, anomalies: Anomalies,
               has_allow_threads: bool) -> list[dict[str, Any]]:
    """One :func:`gil_check` per configuration; a failed check becomes an anomaly."""
    results = []
    for name, options in gil_configurations(has_allow_threads):
        try:
            results.append(gil_check(ws, anomalies, name=name, pings=PINGS, **options))
        except Exception as e:
            anomalies.add(f"gil check {name}", f"{type(e).__name__}: {e}")
    return results


class SlowCall(threading.Thread):
    """``GET /probe/slow`` in the background; ``answer`` is the route's JSON."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.answer: dict[str, Any] = {}

    def run(self) -> None:
        answer = requests.get(self.url, timeout=60)
        self.answer.update(answer.json() if answer.status_code == 200
                           else {"Status": answer.status_code})


def _ping_idle(session: requests.Session, url: str, count: int = 5) -> list[float]:
    session.get(url, timeout=30).raise_for_status()        # the first call may set things up
    times = []
    for _ in range(count):
        t = time.perf_counter()
        session.get(url, timeout=30)
        times.append(time.perf_counter() - t)
    return times


def _ping_during(session: requests.Session, url: str, slow: SlowCall,
                 pings: int) -> list[float]:
    time.sleep(0.2)                          # the slow call is inside HttpGet by now
    times: list[float] = []
    while slow.is_alive() and len(times) < pings:
        t = time.perf_counter()
        session.get(url, timeout=60)
        times.append(time.perf_counter() - t)
        time.sleep(0.02)
    return times


def gil_check(ws: Workspace, anomalies: Anomalies, *, name: str, pings: int,
              **options: Any) -> dict[str, Any]:
    """Ping latencies while ``/probe/slow`` sits in ``orthanc.HttpGet``."""
    result: dict[str, Any] = {"config": name}
    with running("gil", ws.probe_script, anomalies, f"gil check {name}", **options) as server:
        ping_url = server.url + "/probe/ping"
        with requests.Session() as session:
            idle = _ping_idle(session, ping_url)
            slow = SlowCall(server.url + "/probe/slow")
            slow.start()
            during = _ping_during(session, ping_url, slow, pings)
            slow.join()
        plugin = server.get_json("/plugins/python")
    result.update({
        "python_plugin_version": plugin.get("Version"),
        "idle_ping_ms": [round(v * 1000, 2) for v in idle],
        "ping_during_sdk_call_ms": [round(v * 1000, 2) for v in during],
        "slow_call_s": slow.answer.get("Seconds"),
        "first_ping_ms": round(during[0] * 1000, 1) if during else None,
        "max_ping_ms": round(max(during) * 1000, 1) if during else None,
        # Pings served while the slow call ran: the GIL was released during HttpGet.
        "gil_released_during_sdk_calls": bool(during)
        and max(during) < RELEASED_SHARE * ws.slow_delay,
    })
    log(f"gil check {name}: first ping {result['first_ping_ms']} ms, "
        f"max {result['max_ping_ms']} ms, released={result['gil_released_during_sdk_calls']}")
    return result
