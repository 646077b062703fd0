"""How much memory the Orthanc process keeps per request body (part ``memory``).

RSS (``VmRSS``) of a fresh Orthanc before and after ``--puts`` requests with a
``--put-mib`` body, in ``--batches`` batches with ``--settle`` seconds of idleness after
each, on: ``PUT /transfers/push/<unknown tx>/0`` (the plugin's route, 404), the bucket PUTs
of a real push transaction (200; the transaction is deleted after its batch), the
generated one-line route ``PUT /probe/put`` (200), and a core route as control, ``POST
/tools/find`` with an invalid JSON body (400). A route whose RSS grows by about one body
per request keeps the bodies.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench import measure
from devkit.orthanc_server import OrthancServer, md5_hex

from .servers import Anomalies, Workspace, log, running

MB = 1e6


class PutTarget:
    """One kind of request with a body; ``prepare``/``finish`` frame each batch."""

    name = ""
    route = ""
    expected = 0
    script = "plugin"
    #: Error lines that these requests are expected to log.
    expected_errors: re.Pattern[str] | None = None

    def __init__(self, body: bytes, count: int) -> None:
        self.body = body
        self.count = count

    def prepare(self, server: OrthancServer) -> None:
        pass

    def send(self, server: OrthancServer, session: requests.Session, i: int) -> int:
        raise NotImplementedError

    def finish(self, server: OrthancServer) -> None:
        pass


class UnknownTransaction(PutTarget):
    name = "python: PUT /transfers/push/<unknown>/0"
    route = "PUT /transfers/push/<unknown tx>/0"
    expected = 404

    def send(self, server: OrthancServer, session: requests.Session, i: int) -> int:
        tx = uuid.uuid4()
        return session.put(f"{server.url}/transfers/push/{tx}/0", data=self.body,
                           timeout=120).status_code


class PushBuckets(PutTarget):
    """A real push transaction: one instance (fake ID, real MD5) per bucket, not committed."""

    name = "python: push tx bucket PUTs"
    route = "POST /transfers/push, PUT /transfers/push/<tx>/<n>, DELETE"
    expected = 200

    def __init__(self, body: bytes, count: int) -> None:
        super().__init__(body, count)
        self.tx: str | None = None

    def prepare(self, server: OrthancServer) -> None:
        md5 = md5_hex(self.body)
        size = str(len(self.body))
        ids = [hashlib.sha1(uuid.uuid4().bytes).hexdigest()[:8] + "-" + f"{i:08x}"
               for i in range(self.count)]
        plan = {"Instances": [{"ID": i, "Size": size, "MD5": md5} for i in ids],
                "Buckets": [[{"ID": i, "Offset": "0", "Size": size}] for i in ids],
                "Compression": "none"}
        answer = server.post("/transfers/push", json=plan)
        answer.raise_for_status()
        self.tx = str(answer.json()["ID"])

    def send(self, server: OrthancServer, session: requests.Session, i: int) -> int:
        return session.put(f"{server.url}/transfers/push/{self.tx}/{i}", data=self.body,
                           timeout=120).status_code

    def finish(self, server: OrthancServer) -> None:
        if self.tx is not None:
            server.request("DELETE", f"/transfers/push/{self.tx}")
            self.tx = None


class MinimalRoute(PutTarget):
    name = "python: one-line route PUT /probe/put"
    route = "PUT /probe/put (generated script)"
    expected = 200
    script = "probe"

    def send(self, server: OrthancServer, session: requests.Session, i: int) -> int:
        return session.put(f"{server.url}/probe/put", data=self.body, timeout=120).status_code


class CoreFind(PutTarget):
    name = "core: POST /tools/find (invalid JSON)"
    route = "POST /tools/find"
    expected = 400
    expected_errors = re.compile(r"Cannot parse JSON|The body must contain a JSON object")

    def send(self, server: OrthancServer, session: requests.Session, i: int) -> int:
        return session.post(f"{server.url}/tools/find", data=self.body,
                            timeout=120).status_code


#: ``--memory-targets`` keys.
TARGETS: dict[str, type[PutTarget]] = {
    "unknown-tx": UnknownTransaction, "push-tx": PushBuckets, "minimal": MinimalRoute,
    "core": CoreFind}


def slope_per_step(values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against their index."""
    if len(values) < 2:
        return None
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    sxx = sum((i - mean_x) ** 2 for i in range(n))
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sxx


def rss(server: OrthancServer) -> float:
    assert server.process is not None
    return measure.rss_mb(server.process.pid)


def memory_runs(ws: Workspace, anomalies: Anomalies, keys: list[str], *, body: bytes,
                puts: int, batches: int, settle: float) -> list[dict[str, Any]]:
    """One :func:`memory_run` per ``--memory-targets`` key; a failure becomes an anomaly."""
    results = []
    for key in keys:
        target = TARGETS[key](body, puts)
        try:
            results.append(memory_run(ws, anomalies, target, batches=batches, settle=settle,
                                      allow_threads=None))
        except Exception as e:
            anomalies.add(f"memory {target.name}", f"{type(e).__name__}: {e}")
    return results


def memory_run(ws: Workspace, anomalies: Anomalies, target: PutTarget, *, batches: int,
               settle: float, allow_threads: bool | None) -> dict[str, Any]:
    """``batches`` batches of ``target``'s requests on one fresh server."""
    script: Path = ws.plugin_script if target.script == "plugin" else ws.probe_script
    where = f"memory {target.name}"
    result: dict[str, Any] = {"target": target.name, "route": target.route,
                              "body_bytes": len(target.body), "puts_per_batch": target.count,
                              "allow_threads": allow_threads, "batches": []}
    with running("mem", script, anomalies, where, target.expected_errors,
                 allow_threads=allow_threads) as server, requests.Session() as session:
        session.headers["Accept-Encoding"] = "identity"
        # Warm-up: Orthanc's threads, allocator arenas and the route's first call.
        for _ in range(2):
            session.get(server.url + "/system", timeout=30)
        time.sleep(settle)
        before = rss(server)
        result["rss_start_mb"] = round(before, 1)
        for b in range(1, batches + 1):
            batch, before = memory_batch(server, session, target, b, before, settle)
            if set(batch["statuses"]) != {target.expected}:
                anomalies.add(where, f"batch {b}: statuses {batch['statuses']}, expected "
                              f"{target.expected}", server.log_tail(20))
            result["batches"].append(batch)
        result["rss_end_mb"] = round(rss(server), 1)
    return result


def memory_batch(server: OrthancServer, session: requests.Session, target: PutTarget,
                 number: int, before: float, settle: float) -> tuple[dict[str, Any], float]:
    """One batch: ``target.count`` requests, RSS after each, then ``settle`` s idle.
    Returns the batch's figures and the settled RSS, the next batch's starting point."""
    target.prepare(server)
    statuses: dict[int, int] = {}
    trace = []
    t0 = time.perf_counter()
    for i in range(target.count):
        code = target.send(server, session, i)
        statuses[code] = statuses.get(code, 0) + 1
        trace.append(round(rss(server), 1))
    seconds = time.perf_counter() - t0
    after = rss(server)
    target.finish(server)
    time.sleep(settle)
    settled = rss(server)
    log(f"memory {target.name} batch {number}: {before:.0f} -> {after:.0f} MB "
        f"({(after - before) / target.count:+.2f} MB/PUT), settled {settled:.0f} MB, "
        f"statuses {statuses}")
    batch = {"batch": number, "rss_before_mb": round(before, 1),
             "rss_after_mb": round(after, 1), "rss_settled_mb": round(settled, 1),
             **_growth(before, after, trace, target), "seconds": round(seconds, 2),
             "statuses": statuses, "rss_trace_mb": trace}
    return batch, settled


def _growth(before: float, after: float, trace: list[float],
            target: PutTarget) -> dict[str, Any]:
    """RSS growth per request, overall and as the slope of the trace, also per body size."""
    growth = after - before
    slope = slope_per_step(trace[1:])     # the first request may include a one-off
    body = len(target.body)
    return {"growth_mb": round(growth, 1),
            "growth_per_put_mb": round(growth / target.count, 3),
            "slope_per_put_mb": round(slope, 3) if slope is not None else None,
            "slope_per_body": round(slope * MB / body, 3) if slope is not None else None,
            "growth_per_body": round(growth * MB / target.count / body, 3)}
