"""Hostile-input fuzzing of every route of the plugin, against real Orthanc servers.

Properties (hypothesis, derandomized so that CI is reproducible, no shrinking so that
the run stays bounded; every property collects *all* its failing inputs and reports
the shortest ones of each kind, with a request that reproduces them):

1. Any body, query and path on any route: never a 500 nor a dropped connection;
   4xx bodies are Orthanc-style JSON (``HttpStatus``, ``Message``) without traceback;
   2xx bodies are JSON (except chunk bodies); the servers stay healthy and their logs
   hold no traceback of the plugin.
2. Push transactions: declared sizes up to ``MaxInstanceSize`` are accepted without
   using disk (sparse files) and are cleaned by DELETE, larger ones are refused;
   a PUT body of the wrong length, a corrupted stream, a decompression bomb or an
   unknown ``X-Transfers-Encoding`` is a 400, without the receiver's memory jumping.
3. Chunks: malformed ``offset``/``size``/``level``/``compression`` are 400; valid ones
   answer exactly the slice of the concatenated instance files.
4. Nothing is written under a server's directory outside its staging directory
   (Orthanc's own storage and index aside).
5. Unknown job and transaction IDs of every shape are 404 (or 400), never 500.

Orthanc decodes and normalizes request paths itself (``%2F`` becomes ``/``, ``..``
and ``.`` segments are resolved, a NUL byte ends the path), so an ID that contains
them reaches Orthanc's own routes, not the plugin: property 5 keeps such IDs out,
property 1 includes them (any answer but a 500 is fine there).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import shutil
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from devkit.orthanc_server import OrthancServer, md5_hex

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
#: Default ``Transfers.MaxInstanceSize`` (4096 MiB).
MAX_INSTANCE_SIZE = 4096 * MiB
MAX_CHUNK_ARGUMENT = 2**31 - 1
STAGING = "transfers-staging"
ENCODING_HEADER = "X-Transfers-Encoding"
#: What a correct receiver may add to its resident memory while refusing a bomb.
BOMB_MEMORY_LIMIT = 64 * MiB
LOG_ERRORS = re.compile(r"Traceback|Transfers: unexpected error")


# -- bookkeeping: inputs tried, failures found ----------------------------------------

#: Per test: hypothesis examples run and HTTP requests sent.
STATS: dict[str, dict[str, int]] = {}
_CURRENT_TEST = ["(setup)"]


def _stat(name: str, amount: int = 1) -> None:
    entry = STATS.setdefault(_CURRENT_TEST[0], {"examples": 0, "requests": 0})
    entry[name] += amount


@pytest.fixture(autouse=True)
def _track_test(request: pytest.FixtureRequest) -> Iterator[None]:
    _CURRENT_TEST[0] = request.node.name
    yield
    _CURRENT_TEST[0] = "(teardown)"


@pytest.fixture(scope="module", autouse=True)
def _print_stats(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = [f"fuzz: {name}: {s['examples']} examples, {s['requests']} requests"
             for name, s in STATS.items()]
    examples = sum(s["examples"] for s in STATS.values())
    sent = sum(s["requests"] for s in STATS.values())
    lines.append(f"fuzz: total {examples} examples, {sent} requests (inputs tried) in "
                 f"{time.monotonic() - started:.1f} s")
    # Printed past pytest's capture, so that it shows with -q too.
    with capture.global_and_fixture_disabled() if capture is not None \
            else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


@dataclass
class Findings:
    """Failing inputs grouped by kind; the shortest few of each kind are reported."""

    kinds: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, repro: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        repros = self.kinds.setdefault(kind, [])
        if repro not in repros:
            repros.append(repro)
            repros.sort(key=len)
            del repros[5:]

    def check(self, what: str) -> None:
        if not self.kinds:
            return
        lines = [f"{what}: {len(self.kinds)} kind(s) of failure"]
        for kind in sorted(self.kinds):
            lines.append(f"* {kind} ({self.counts[kind]} input(s)); shortest:")
            lines += [f"    {repro}" for repro in self.kinds[kind][:3]]
        pytest.fail("\n".join(lines), pytrace=False)


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=list(HealthCheck))


# -- HTTP -------------------------------------------------------------------------------


def q(text: str) -> str:
    """One path segment or query value, every reserved character escaped."""
    return urllib.parse.quote(text, safe="")


def _short(value: str | bytes, limit: int = 160) -> str:
    if len(value) <= limit:
        return repr(value)
    unit = "bytes" if isinstance(value, bytes) else "chars"
    return f"{value[:limit - 40]!r}...({len(value)} {unit})"


@dataclass(frozen=True)
class Call:
    method: str
    path: str                                   # already escaped, query included
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    route: str = ""                             # the route template, to group failures

    def describe(self) -> str:
        parts = [self.method, _short(self.path, 200)]
        if self.headers:
            parts.append(f"headers={self.headers!r}")
        if self.body:
            parts.append(f"body={_short(self.body)}")
        return " ".join(parts)

    @property
    def label(self) -> str:
        return f"{self.method} {self.route or self.path.split('?')[0]}"


def alive(server: OrthancServer) -> bool:
    try:
        return server.get("/system", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def perform(server: OrthancServer, call: Call,
            timeout: float = 30.0) -> tuple[requests.Response | None, str | None]:
    """Send ``call``; a dropped connection is a finding, and a dead server is restarted."""
    _stat("requests")
    try:
        response = server.session.request(call.method, server.url + call.path,
                                          data=call.body, headers=call.headers,
                                          timeout=timeout, allow_redirects=False)
        return response, None
    except requests.RequestException as e:
        if alive(server):
            return None, f"connection error ({type(e).__name__})"
        server.restart()
        return None, f"connection error: Orthanc {server.name} died (restarted)"


def judge(response: requests.Response, *, binary_ok: bool = False) -> str | None:
    """What is wrong with an answer, per property 1, or None."""
    status = response.status_code
    if status >= 500 and status not in (502, 503):
        return f"HTTP {status}"
    if b"Traceback" in response.content:
        return f"HTTP {status} with a traceback in the body"
    if status >= 400 and response.content:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {status} with a body that is not JSON"
        if not isinstance(body, dict) or not isinstance(body.get("Message"), str) \
                or body.get("HttpStatus") != status:
            return f"HTTP {status} with a JSON body lacking HttpStatus/Message"
    if 200 <= status < 300 and not binary_ok:
        try:
            response.json()
        except ValueError:
            return f"HTTP {status} with a body that is not JSON"
    return None


def check_call(findings: Findings, server: OrthancServer, call: Call, *,
               binary_ok: bool = False,
               expect: tuple[int, ...] | None = None) -> requests.Response | None:
    response, error = perform(server, call)
    if response is None:
        findings.add(f"{call.label} -> {error}", call.describe())
        return None
    problem = judge(response, binary_ok=binary_ok)
    if problem is None and expect is not None and response.status_code not in expect:
        problem = f"HTTP {response.status_code}, expected {' or '.join(map(str, expect))}"
    if problem is not None:
        detail = ""
        if response.status_code >= 400:
            try:
                detail = f" -> {response.json().get('Details', '')!r:.150}"
            except (ValueError, AttributeError):
                detail = f" -> {response.content[:100]!r}"
        findings.add(f"{call.label}: {problem}", call.describe() + detail)
    return response


# -- server state: logs, files, memory --------------------------------------------------


class LogWatch:
    """Lines of a server's log that match :data:`LOG_ERRORS` written since creation."""

    def __init__(self, server: OrthancServer) -> None:
        self.server = server
        self.offset = server.log_path.stat().st_size if server.log_path.exists() else 0

    def new_errors(self) -> list[str]:
        with open(self.server.log_path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
        return [line[:300] for line in text.splitlines() if LOG_ERRORS.search(line)]


_ORTHANC_OWN = re.compile(r"^(orthanc\.log$|storage/index(-wal|-shm|-journal)?$|"
                          r"storage/[0-9a-f]{2}(/[0-9a-f]{2}(/[^/]+)?)?$)")


def snapshot(server: OrthancServer) -> dict[str, tuple[int, int]]:
    """Every file and directory under the server's directory, with size and mtime,
    except the staging directory, Orthanc's attachments, its index and the log."""
    root = server.workdir
    staging = server.storage / STAGING
    found: dict[str, tuple[int, int]] = {}
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        dirnames[:] = [d for d in dirnames if here / d != staging]
        for name in [*dirnames, *filenames]:
            path = here / name
            relative = path.relative_to(root).as_posix()
            if _ORTHANC_OWN.match(relative):
                continue
            info = path.lstat()
            found[relative] = (0, 0) if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return found


def changed_outside_staging(before: dict[str, tuple[int, int]],
                            after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted({k for k in after if before.get(k) != after[k]} | (before.keys() - after.keys()))


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes actually allocated) of every file below ``path``."""
    apparent = allocated = 0
    for directory, _, filenames in os.walk(path):
        for name in filenames:
            info = (Path(directory) / name).lstat()
            apparent += info.st_size
            allocated += info.st_blocks * 512
    return apparent, allocated


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class PeakRss:
    """Peak resident memory of a process during a block, above its level at the start.

    The kernel's high-water mark is reset at the start (``clear_refs``) and a sampler
    also polls ``VmRSS``, so a short spike that is freed at once is still seen.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.peak = self.after = 0
        self._hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, _status_kb(self.pid, "VmRSS") * KiB)
            except (OSError, KeyError):
                return
            self._stop.wait(0.002)

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._hwm_reset = True
        except OSError:
            pass
        self.baseline = self.peak = _status_kb(self.pid, "VmRSS") * KiB
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.after = _status_kb(self.pid, "VmRSS") * KiB
        if self._hwm_reset:
            self.peak = max(self.peak, _status_kb(self.pid, "VmHWM") * KiB)

    @property
    def growth(self) -> int:
        return max(self.peak, self.after) - self.baseline


# -- fixtures -------------------------------------------------------------------------


@dataclass
class Fuzz:
    a: OrthancServer                     # source and general target
    b: OrthancServer                     # push receiver of properties 2
    ids: list[str]                       # three real instances on a (and files for b)
    files: dict[str, bytes]
    tx: str                              # a push transaction held open on a
    job: str                             # a finished transfer job on a
    start: dict[str, dict[str, tuple[int, int]]]
    logs: dict[str, LogWatch]

    @property
    def servers(self) -> tuple[OrthancServer, OrthancServer]:
        return self.a, self.b


SHARED_TX_INSTANCE = "feedc0de"


@pytest.fixture(scope="module")
def fuzz(pair: tuple[OrthancServer, OrthancServer], sample_files: list[bytes]) -> Fuzz:
    a, b = pair
    a.wipe()
    b.wipe()
    chosen = sorted(sample_files, key=len)[-5:-2]          # three files of 36-160 KB
    ids = a.upload(chosen)
    files = {i: a.get(f"/instances/{i}/file").content for i in ids}
    assert len(set(ids)) == 3 and all(files.values())
    created = a.post("/transfers/push", json={
        "Instances": [{"ID": SHARED_TX_INSTANCE, "Size": "32", "MD5": "0" * 32}],
        "Buckets": [[{"ID": SHARED_TX_INSTANCE, "Offset": "0", "Size": "16"}],
                    [{"ID": SHARED_TX_INSTANCE, "Offset": "16", "Size": "16"}]],
        "Compression": "none"})
    assert created.status_code == 200, created.text
    pulled = a.post("/transfers/pull", json={
        "Resources": [{"Level": "Study", "ID": "0123456789abcdef"}], "Peer": "b",
        "Compression": "none"})
    assert pulled.status_code == 200, pulled.text
    job = pulled.json()["ID"]
    a.wait_job(job, timeout=30)
    return Fuzz(a=a, b=b, ids=ids, files=files, tx=created.json()["ID"], job=job,
                start={s.name: snapshot(s) for s in pair},
                logs={s.name: LogWatch(s) for s in pair})


def assert_servers_sound(servers: tuple[OrthancServer, ...], logs: dict[str, LogWatch],
                         before: dict[str, dict[str, tuple[int, int]]],
                         findings: Findings) -> None:
    """After a property: healthy, no traceback logged, nothing written outside staging."""
    for server in servers:
        if not alive(server):
            findings.add(f"Orthanc {server.name} is not healthy after the run",
                         "GET /system")
        for line in logs[server.name].new_errors():
            findings.add(f"Orthanc {server.name} logged a Python error", line)
        for path in changed_outside_staging(before[server.name], snapshot(server)):
            findings.add(f"Orthanc {server.name}: written outside {STAGING}", path)


# -- strategies ---------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
HOSTILE_TEXT: list[str] = [
    "", " ", "..", "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e", "%2e%2e%2f",
    "..\\..\\windows\\win.ini", "/etc/passwd", "\x00", "a\x00b", "\r\n", "\t1", "é",
    "ünïcødé", "\u202e\u0663", "²", "\uff11", "٣", "\U0001f4a9", "-1", "+1", " 1", "1 ", "0x10",
    "1e3", "1.5", "NaN", "Infinity", "null", "true", "0" * 40, "2147483647", "2147483648",
    "4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551616",
    "-9223372036854775809", "99999999999999999999", "9" * 5000, "x" * 5000, "x" * 100_000,
    "<script>alert(1)</script>", "'; DROP TABLE resources; --", "{}", "[]", "gzip ",
    "GZIP", "zstd", "none", "Study", "Instance",
]
#: Short enough to be a path segment or a query value (Orthanc caps a request line).
HOSTILE_SEGMENTS = [t for t in HOSTILE_TEXT if len(t) <= 5000]
HOSTILE_NUMBERS: list[Any] = [
    0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30,
    -(10**30), 10**4000, 1.5, -0.0, 1e308, float("inf"), float("-inf"), float("nan"),
]
HOSTILE_VALUES: list[Any] = [*HOSTILE_TEXT, *HOSTILE_NUMBERS, None, True, False, [], {},
                             [None], {"": None}, [[[[[]]]]]]
KEYS = ["Resources", "Peer", "Compression", "Priority", "SenderTransferID", "Originator",
        "Level", "ID", "Instances", "Buckets", "Size", "MD5", "Offset", "__proto__"]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.integers(min_value=-(2**80), max_value=2**80), st.floats(),
                         TEXT, st.sampled_from(HOSTILE_VALUES))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), TEXT), children, max_size=4)),
    max_leaves=12)
MISSING = object()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position of a JSON document (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def _mutate(template: Any, path: tuple[Any, ...], value: Any) -> Any:
    document = copy.deepcopy(template)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def near_valid(template: Any) -> st.SearchStrategy[Any]:
    """The template with one field removed, or replaced by a hostile or random value."""
    positions = _paths(template)
    replacement = st.one_of(st.sampled_from(HOSTILE_VALUES), json_scalars, json_values,
                            st.just(MISSING))
    return st.tuples(st.sampled_from(positions), replacement).map(
        lambda change: _mutate(template, *change))


def dumps(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode()


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, drawn with the given weights."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda strategy: strategy)


def bodies(template: Any | None) -> st.SearchStrategy[bytes]:
    choices: list[tuple[int, st.SearchStrategy[bytes]]] = [
        (2, st.binary(max_size=300)),
        (2, st.tuples(json_values, st.booleans()).map(lambda v: dumps(*v))),
        (1, st.sampled_from([b"", b"{", b"[", b"\xff\xfe", b"\x00", b"null", b"[]", b"{}",
                             b"NaN", b"1e999999", b"9" * 5000, b'"\\ud800"',
                             b'{"a":1,"a":2}']))]
    if template is not None:
        choices += [(4, near_valid(template).map(dumps)), (1, st.just(dumps(template)))]
    return weighted(*choices)


def query_args(keys: list[str]) -> st.SearchStrategy[dict[str, str]]:
    values = st.one_of(st.sampled_from(HOSTILE_SEGMENTS), st.integers().map(str), TEXT)
    return st.dictionaries(st.one_of(st.sampled_from(keys), TEXT), values, max_size=3)


VALID_CHUNK_ARGS = {"offset": "0", "size": "100", "compression": "none", "level": "1"}


def near_valid_query(valid: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """Valid arguments with one of them replaced by a hostile or random value."""
    values = st.one_of(st.sampled_from(HOSTILE_SEGMENTS), st.integers().map(str), TEXT)
    return st.tuples(st.sampled_from(sorted(valid)), values).map(
        lambda change: {**valid, change[0]: change[1]})


def encode_query(args: dict[str, str]) -> str:
    return "?" + "&".join(f"{q(k)}={q(v)}" for k, v in args.items()) if args else ""


# == Property 1: every route, any input ===================================================

NONEXISTENT = "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    template: str                        # {placeholders} are drawn per example
    body: Any | None = None              # near-valid JSON template of the body
    binary_ok: bool = False              # 2xx answers need not be JSON


def route_specs(fuzz: Fuzz) -> list[RouteSpec]:
    transfer = {"Resources": [{"Level": "Study", "ID": NONEXISTENT}], "Peer": "b",
                "Compression": "gzip", "Priority": 0, "SenderTransferID": "fuzz",
                "Originator": "fuzz"}
    push = {"Instances": [{"ID": "0123abcd", "Size": "16", "MD5": "0" * 32}],
            "Buckets": [[{"ID": "0123abcd", "Offset": "0", "Size": "16"}]],
            "Compression": "none"}
    return [
        RouteSpec("POST", "/transfers/send", transfer),
        RouteSpec("POST", "/transfers/pull", transfer),
        RouteSpec("POST", "/transfers/lookup", [{"Level": "Instance", "ID": fuzz.ids[0]}]),
        RouteSpec("GET", "/transfers/chunks/{ids}", binary_ok=True),
        RouteSpec("GET", "/transfers/peers"),
        RouteSpec("POST", "/transfers/push", push),
        RouteSpec("GET", "/transfers/push/{tx}"),
        RouteSpec("DELETE", "/transfers/push/{fresh_tx}"),
        RouteSpec("PUT", "/transfers/push/{tx}/{n}"),
        RouteSpec("POST", "/transfers/push/{tx}/commit"),
        RouteSpec("GET", "/jobs"),
        RouteSpec("GET", "/jobs/{job}"),
        RouteSpec("POST", "/jobs/{job}/{action}"),
    ]


def segments() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_SEGMENTS), TEXT, st.uuids().map(str),
                     st.text("0123456789abcdef-.", min_size=1, max_size=60))


def _fresh_transaction(server: OrthancServer) -> str:
    response, _ = perform(server, Call("POST", "/transfers/push", dumps({
        "Instances": [{"ID": "abcd", "Size": "8", "MD5": "0" * 32}],
        "Buckets": [[{"ID": "abcd", "Offset": "0", "Size": "8"}]], "Compression": "gzip"})))
    assert response is not None and response.status_code == 200, \
        response.text if response is not None else "no answer"
    tx: str = response.json()["ID"]
    return tx


def test_every_route_survives_hostile_input(fuzz: Fuzz) -> None:
    """Property 1 (with 4 for both servers): no 500, sane bodies, healthy, clean logs."""
    a = fuzz.a
    findings = Findings()
    specs = route_specs(fuzz)
    before = {s.name: snapshot(s) for s in fuzz.servers}
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    # Mostly the real thing, so that most requests get past the first check.
    placeholders: dict[str, st.SearchStrategy[str]] = {
        "ids": weighted((2, st.just(".".join(fuzz.ids))),
                        (4, st.lists(st.sampled_from(fuzz.ids), min_size=1,
                                     max_size=4).map(".".join)),
                        (3, segments())),
        "tx": weighted((7, st.just(fuzz.tx)), (3, segments())),
        "n": weighted((7, st.sampled_from(["0", "1", "2"])), (3, segments())),
        "job": weighted((6, st.just(fuzz.job)), (4, segments())),
        "action": st.sampled_from(["pause", "resume", "cancel", "resubmit"]),
    }
    query_keys = ["offset", "size", "compression", "level", "expand", "limit", "since"]

    @fuzz_settings(400)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        _stat("examples")
        spec = data.draw(st.sampled_from(specs), "route")
        path = spec.template
        for name, strategy in placeholders.items():
            if "{" + name + "}" in path:
                path = path.replace("{" + name + "}", q(data.draw(strategy, name)))
        if spec.template.startswith("/transfers/chunks/"):
            query = data.draw(weighted((7, near_valid_query(VALID_CHUNK_ARGS)),
                                       (3, query_args(query_keys))), "query")
        else:
            query = data.draw(query_args(query_keys), "query")
        path += encode_query(query)
        body = data.draw(bodies(spec.body), "body")
        # No stray DELETE on the transaction held open for the whole module.
        methods = ["GET", "POST", "PUT"] if "{tx}" in spec.template else \
            ["GET", "POST", "PUT", "DELETE"]
        method = data.draw(st.sampled_from([spec.method] * 12 + methods), "method")
        headers: dict[str, str] = {}
        if spec.method == "PUT":
            encoding = data.draw(st.sampled_from(
                [None, None, None, "gzip", "zstd", "none", "br", "", "GZIP", "x" * 1000]),
                "encoding")
            if encoding is not None:
                headers[ENCODING_HEADER] = encoding
        # Created after the last draw: a draw may end the example early.
        fresh = _fresh_transaction(a) if "{fresh_tx}" in path else None
        if fresh is not None:
            path = path.replace("{fresh_tx}", fresh)
        try:
            call = Call(method, path, body, headers, route=spec.template)
            response = check_call(findings, a, call, binary_ok=spec.binary_ok)
            if response is not None and response.status_code == 200 and method == "POST" \
                    and spec.template == "/transfers/push":
                # Keep MaxPushTransactions free: discard what the fuzzer managed to open.
                perform(a, Call("DELETE", f"/transfers/push/{q(response.json()['ID'])}"))
        finally:
            if fresh is not None:
                perform(a, Call("DELETE", f"/transfers/push/{fresh}"))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("hostile input on every route")


# == Property 5: unknown job and transaction IDs ==========================================


def _plugin_reaches(segment: str) -> bool:
    """Whether Orthanc hands this decoded path segment to the route as it is."""
    return "/" not in segment and "\\" not in segment and "\x00" not in segment \
        and segment.strip(". ") != ""


def unknown_ids() -> st.SearchStrategy[str]:
    """Escaped path segments: IDs of every shape that no job or transaction has."""
    texts = st.one_of(
        st.uuids().map(str),
        st.text("0123456789abcdef-", min_size=1, max_size=80),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
        st.sampled_from([*HOSTILE_SEGMENTS, "?", "?expand", "a?b", "#", "a#b", "%", "%zz",
                         "%2e%2e", "%00", "%2F", ";", "*", "~", "a b"]),
    ).filter(_plugin_reaches).map(q)
    # Bytes that are not UTF-8 (e.g. %FF): a path Orthanc decodes but Python cannot.
    raw = st.binary(min_size=1, max_size=6).filter(
        lambda b: _plugin_reaches(b.decode("latin-1"))).map(
        lambda b: urllib.parse.quote_from_bytes(b, safe=""))
    return st.one_of(texts, raw)


def test_unknown_ids_answer_404_or_400(fuzz: Fuzz) -> None:
    """Property 5."""
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    routes = [("GET", "/jobs/{}"), ("POST", "/jobs/{}/pause"), ("POST", "/jobs/{}/resume"),
              ("POST", "/jobs/{}/cancel"), ("POST", "/jobs/{}/resubmit"),
              ("GET", "/transfers/push/{}"), ("DELETE", "/transfers/push/{}"),
              ("PUT", "/transfers/push/{}/0"), ("POST", "/transfers/push/{}/commit"),
              ("GET", "/transfers/chunks/{}")]

    @fuzz_settings(250)
    @given(route=st.sampled_from(routes), segment=unknown_ids())
    @example(route=("GET", "/jobs/{}"), segment=q("?expand"))
    @example(route=("POST", "/jobs/{}/pause"), segment="%FF")
    @example(route=("GET", "/jobs/{}"), segment="%FF")
    @example(route=("GET", "/transfers/push/{}"), segment="%FF")
    @example(route=("GET", "/transfers/chunks/{}"), segment="%FF")
    def run(route: tuple[str, str], segment: str) -> None:
        _stat("examples")
        method, template = route
        body = b"\x1f\x8b" if method == "PUT" else b""
        call = Call(method, template.format(segment), body, route=template.format("<id>"))
        check_call(findings, fuzz.a, call, binary_ok=True, expect=(400, 404))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("unknown IDs")


def test_bucket_indexes_of_every_shape(fuzz: Fuzz) -> None:
    """Property 5 for the bucket number of ``PUT /transfers/push/<tx>/<n>`` on a real
    transaction of two buckets: anything but the ASCII digits of 0 or 1 is a 404/400."""
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}

    def valid(index: str) -> bool:
        # At most 9 digits are read as a bucket number; longer ones are refused (404).
        return re.fullmatch("0{0,8}[01]", index) is not None

    indexes = st.one_of(bad_numbers(), st.integers(2, 2**70).map(str),
                        st.text(st.characters(codec="utf-8"), min_size=1, max_size=12),
                        st.sampled_from(HOSTILE_SEGMENTS)).filter(_plugin_reaches)

    @fuzz_settings(120)
    @given(index=indexes)
    @example(index="\u0660")                  # ARABIC-INDIC DIGIT ZERO
    @example(index="\u00b2")                  # SUPERSCRIPT TWO
    @example(index="9" * 5000)
    def run(index: str) -> None:
        _stat("examples")
        call = Call("PUT", f"/transfers/push/{fuzz.tx}/{q(index)}", b"\0" * 16,
                    route="/transfers/push/<tx>/<n>")
        check_call(findings, fuzz.a, call, expect=(200, 400) if valid(index) else (400, 404))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("bucket indexes")


# == Property 3: chunks ===================================================================


def bad_numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(MAX_CHUNK_ARGUMENT + 1, 2**64 + 10).map(str),
        st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64]).map(str),
        st.integers(-(2**63) - 10, -1).map(str),
        st.integers(0, MAX_CHUNK_ARGUMENT).flatmap(lambda n: st.sampled_from([
            f"+{n}", f" {n}", f"{n} ", f"\t{n}", f"0x{n:x}", f"{n}.0", f"{n}e0", f"-{n}",
            f"{n}\x00", f"{n:_}" if n >= 1000 else f"{n}a"])),
        st.sampled_from(["", "-0", "٣", "²", "\uff11", "\U0001d7d7", "9" * 5000,
                         "0" * 5000 + "1", "nan", "inf", "1_000", "0b1", "0o7", "١٢", "½"]),
    )


def test_chunks_refuse_malformed_arguments(fuzz: Fuzz) -> None:
    """Property 3, first half: offsets, sizes and levels that are not plain integers in
    range, and unknown compressions, are a 400."""
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    levels_ok = {str(n) for n in range(0, 20)}
    bad_levels = st.one_of(bad_numbers(), st.sampled_from(["20", "100", "-3"])).filter(
        lambda v: v not in levels_ok)
    bad_compressions = st.one_of(TEXT, st.sampled_from(HOSTILE_SEGMENTS)).filter(
        lambda v: v not in OUR_ENCODINGS)

    @fuzz_settings(200)
    @given(name=st.sampled_from(["offset", "size", "level", "compression"]), data=st.data())
    def run(name: str, data: st.DataObject) -> None:
        _stat("examples")
        strategy = {"level": bad_levels, "compression": bad_compressions}.get(name,
                                                                             bad_numbers())
        value = data.draw(strategy, name)
        args = {"offset": "0", "size": "100", "compression": "none", name: value}
        call = Call("GET", f"/transfers/chunks/{fuzz.ids[0]}{encode_query(args)}",
                    route=f"/transfers/chunks/<id>?{name}=<bad>")
        check_call(findings, fuzz.a, call, binary_ok=True, expect=(400,))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("malformed chunk arguments")


#: Every encoding a plugin of ours may announce.
OUR_ENCODINGS = ("none", "gzip", "zstd", "xz", "shuffle-zstd", "shuffle-xz")


def _decode(payload: bytes, encoding: str, expected_size: int) -> bytes:
    """Independent decoders for what the original knows; ours for our extensions."""
    if encoding == "gzip":
        return zlib.decompress(payload, 31)
    if encoding == "zstd":
        zstandard = pytest.importorskip("zstandard")
        data: bytes = zstandard.ZstdDecompressor().decompress(payload, max_output_size=64 * MiB)
        return data
    if encoding == "none":
        return payload
    from orthanc_transfers.encoding import Encoding, decode
    from orthanc_transfers.errors import IntegrityError
    try:
        return decode(payload, Encoding(encoding), expected_size)
    except IntegrityError as e:
        raise ValueError(str(e)) from e


def test_chunks_answer_exact_slices(fuzz: Fuzz) -> None:
    """Property 3, second half: any valid (offset, size) over any list of three real
    instances answers exactly that slice of their concatenated files."""
    findings = Findings()
    files = {i: fuzz.a.get(f"/instances/{i}/file").content for i in fuzz.ids}
    total = sum(len(f) for f in files.values())
    encodings = fuzz.a.post("/transfers/lookup", json=[
        {"Level": "Instance", "ID": fuzz.ids[0]}]).json().get("Encodings", ["gzip", "none"])
    numbers = st.one_of(st.integers(0, total + 100), st.integers(0, 3000),
                        st.sampled_from([0, 1, MAX_CHUNK_ARGUMENT, MAX_CHUNK_ARGUMENT - 1]))

    @fuzz_settings(120)
    @given(ids=st.lists(st.sampled_from(fuzz.ids), min_size=1, max_size=4),
           offset=numbers, size=numbers, encoding=st.sampled_from(encodings),
           level=st.one_of(st.none(), st.integers(1, 9)))
    def run(ids: list[str], offset: int, size: int, encoding: str, level: int | None) -> None:
        _stat("examples")
        concatenation = b"".join(files[i] for i in ids)
        expected = concatenation[offset:] if size == 0 else concatenation[offset:offset + size]
        args = {"offset": str(offset), "size": str(size), "compression": encoding}
        if level is not None:
            args["level"] = str(level)
        call = Call("GET", f"/transfers/chunks/{'.'.join(ids)}{encode_query(args)}",
                    route="/transfers/chunks/<ids>")
        response = check_call(findings, fuzz.a, call, binary_ok=True, expect=(200,))
        if response is None or response.status_code != 200:
            return
        used = response.headers.get(ENCODING_HEADER, encoding)
        try:
            data = _decode(response.content, used, len(expected))
        except (zlib.error, ValueError) as e:
            findings.add("chunk answer does not decode", f"{call.describe()} -> {e}")
            return
        if data != expected:
            findings.add("chunk answer is not the requested slice",
                         f"{call.describe()} -> {len(data)} bytes, expected {len(expected)}")

    run()
    findings.check("chunk slices")


# == Property 2: push transactions ========================================================


def _hex_id(n: int) -> str:
    return f"{n:08x}-fa22"


def _push_root(server: OrthancServer) -> Path:
    return server.storage / STAGING / "push"


declared_sizes = st.one_of(
    st.integers(0, MAX_INSTANCE_SIZE),
    st.sampled_from([0, 1, MAX_INSTANCE_SIZE - 1, MAX_INSTANCE_SIZE, MAX_INSTANCE_SIZE + 1,
                     2**32 + 1, 2**63 - 1, 2**63, 2**64, 10**19 - 1]),
    st.integers(MAX_INSTANCE_SIZE + 1, 10**19 - 1),
)


def test_push_declared_sizes_sparse_and_cleaned(fuzz: Fuzz) -> None:
    """Property 2: declared sizes up to MaxInstanceSize open a transaction without using
    disk (sparse files), DELETE removes it; larger or ill-typed sizes are a 400; a short
    PUT into a huge bucket is a 400."""
    b = fuzz.b
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    root = _push_root(b)

    @fuzz_settings(40)
    @given(sizes=st.lists(declared_sizes, min_size=1, max_size=4),
           typed=st.integers(0, 9), compression=st.sampled_from(["gzip", "none"]))
    def run(sizes: list[int], typed: int, compression: str) -> None:
        _stat("examples")
        # One in ten examples sends a size as a JSON number: the wire wants strings.
        typed_wrong = typed == 0
        instances = [{"ID": _hex_id(n), "Size": size if typed_wrong and n == 0 else str(size),
                      "MD5": "0" * 32} for n, size in enumerate(sizes)]
        buckets = [[{"ID": _hex_id(n), "Offset": "0", "Size": str(size)}]
                   for n, size in enumerate(sizes)]
        body = dumps({"Instances": instances, "Buckets": buckets, "Compression": compression})
        total = sum(sizes)
        free = shutil.disk_usage(b.storage).free
        if typed_wrong or max(sizes) > MAX_INSTANCE_SIZE:
            expect: tuple[int, ...] = (400,)
        elif total > free + GiB:
            expect = (503,)
        elif total < free - GiB:
            expect = (200,)
        else:
            expect = (200, 503)
        usage_before = disk_usage(root)[1]
        dirs_before = set(os.listdir(root))
        call = Call("POST", "/transfers/push", body, route="/transfers/push")
        response = check_call(findings, b, call, expect=expect)
        if response is None or response.status_code != 200:
            if set(os.listdir(root)) != dirs_before:
                findings.add("a refused creation left a directory in staging", call.describe())
            return
        tx = response.json()["ID"]
        apparent = disk_usage(root / tx)[0]
        allocated = disk_usage(root)[1] - usage_before
        if apparent < total or allocated > 1 * MiB:
            findings.add("creation allocated disk (files not sparse)",
                         f"{call.describe()} -> {allocated} bytes allocated in staging for "
                         f"{apparent} declared")
        if sizes[0] != 100:
            put = Call("PUT", f"/transfers/push/{tx}/0", b"\0" * 100,
                       route="/transfers/push/<tx>/<n>")
            check_call(findings, b, put, expect=(400,))
        deleted = Call("DELETE", f"/transfers/push/{tx}", route="/transfers/push/<tx>")
        check_call(findings, b, deleted, expect=(200,))
        if (root / tx).exists():
            findings.add("DELETE left the transaction's staging directory", call.describe())
        check_call(findings, b, Call("GET", f"/transfers/push/{tx}",
                                     route="/transfers/push/<deleted tx>"), expect=(404,))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("declared push sizes")


def _push_plan(fuzz: Fuzz, compression: str) -> tuple[dict[str, Any], list[bytes]]:
    """A creation body over the three real files, and the payload of each bucket."""
    first, second, third = fuzz.ids
    half = len(fuzz.files[third]) // 2
    buckets = [[(first, 0, len(fuzz.files[first])), (second, 0, len(fuzz.files[second]))],
               [(third, 0, half)],
               [(third, half, len(fuzz.files[third]) - half)]]
    body = {"Instances": [{"ID": i, "Size": str(len(fuzz.files[i])), "MD5": md5_hex(fuzz.files[i])}
                          for i in fuzz.ids],
            "Buckets": [[{"ID": i, "Offset": str(o), "Size": str(s)} for i, o, s in bucket]
                        for bucket in buckets],
            "Compression": compression}
    payloads = [b"".join(fuzz.files[i][o:o + s] for i, o, s in bucket) for bucket in buckets]
    return body, payloads


def _encode(data: bytes, encoding: str | None, compression: str) -> bytes:
    if (encoding or compression) == "gzip":
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        return compressor.compress(data) + compressor.flush()
    if encoding == "zstd":
        zstandard = pytest.importorskip("zstandard")
        encoded: bytes = zstandard.ZstdCompressor(level=1).compress(data)
        return encoded
    return data


def test_push_bucket_lengths_and_streams(fuzz: Fuzz) -> None:
    """Property 2: a PUT whose decoded length differs from the declared bucket, or whose
    stream is corrupted, is a 400 and changes nothing; the right bytes then commit."""
    b = fuzz.b
    b.wipe()
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    body, payloads = _push_plan(fuzz, "none")
    created = b.post("/transfers/push", json=body)
    assert created.status_code == 200, created.text
    tx = created.json()["ID"]
    encodings = created.json().get("Encodings", ["gzip", "none"])

    @fuzz_settings(80)
    @given(index=st.integers(0, 2), delta=st.integers(-100_000, 100_000).filter(bool),
           encoding=st.sampled_from([None, *encodings]), corrupt=st.integers(0, 4),
           seed=st.integers(0, 2**32))
    def run(index: int, delta: int, encoding: str | None, corrupt: int, seed: int) -> None:
        _stat("examples")
        size = len(payloads[index])
        length = max(0, size + delta)             # never the declared size: delta != 0
        data = random.Random(seed).randbytes(length)
        if corrupt == 0 and encoding in ("gzip", "zstd"):
            # The right bytes in a stream cut short (zstd frames carry no checksum by
            # default, so a flipped byte could decode to the right length).
            stream = _encode(payloads[index], encoding, "none")
            payload = stream[:len(stream) // 2]
        elif corrupt == 1 and encoding == "gzip":
            # The right bytes, then data after the gzip member.
            payload = _encode(payloads[index], encoding, "none") + b"\x1f\x8b\x08trailing"
        else:
            payload = _encode(data, encoding, "none")
        headers = {ENCODING_HEADER: encoding} if encoding is not None else {}
        call = Call("PUT", f"/transfers/push/{tx}/{index}", payload, headers,
                    route="/transfers/push/<tx>/<n>")
        check_call(findings, b, call, expect=(400,))

    run()
    status = b.get_json(f"/transfers/push/{tx}")
    assert status["ReceivedBuckets"] == [], f"refused PUTs were kept: {status}"
    for index, payload in enumerate(payloads):
        put = b.request("PUT", f"/transfers/push/{tx}/{index}", data=payload)
        assert put.status_code == 200, put.text
    committed = b.post(f"/transfers/push/{tx}/commit")
    assert committed.status_code == 200, committed.text
    assert b.instance_md5s() == {i: md5_hex(f) for i, f in fuzz.files.items()}
    b.wipe()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("push bucket lengths")


def _open_bucket_of(server: OrthancServer, size: int, compression: str) -> tuple[str, list[str]]:
    """A transaction of one bucket of ``size`` bytes; its ID and the receiver's encodings."""
    response = server.post("/transfers/push", json={
        "Instances": [{"ID": "b0b0", "Size": str(size), "MD5": "0" * 32}],
        "Buckets": [[{"ID": "b0b0", "Offset": "0", "Size": str(size)}]],
        "Compression": compression})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer["ID"], list(answer.get("Encodings", ["gzip", "none"]))


def _gzip_zeros(count: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * MiB
    parts = [compressor.compress(block) for _ in range(count // MiB)]
    return b"".join(parts) + compressor.flush()


def _zstd_zeros(count: int, pledge: bool) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=pledge)
    stream = compressor.compressobj(size=count if pledge else -1)
    block = b"\0" * MiB
    parts = [stream.compress(block) for _ in range(count // MiB)]
    data: bytes = b"".join(parts) + stream.flush()
    return data


def _zstd_forged_content_size(content_size: int) -> bytes:
    """A tiny zstd frame whose header claims ``content_size`` bytes."""
    zstandard = pytest.importorskip("zstandard")
    frame: bytes = zstandard.ZstdCompressor(write_content_size=True).compress(b"x" * 10)
    assert frame[4] == 0x20                   # single segment, 1-byte content size
    return frame[:4] + bytes([0xE0]) + content_size.to_bytes(8, "little") + frame[6:]


BOMB = 200 * MiB


@pytest.mark.parametrize("kind", ["gzip", "zstd-streamed", "zstd-pledged-size",
                                  "zstd-forged-size"])
def test_push_decompression_bombs(fuzz: Fuzz, kind: str) -> None:
    """Property 2: 200 MB of zeros (or a header claiming 1 TiB) sent for a 1 KiB bucket:
    a quick 400, and the receiver's memory does not follow the bomb."""
    b = fuzz.b
    assert b.process is not None
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {b.name: snapshot(b)}
    headers: dict[str, str] = {}
    tx, encodings = _open_bucket_of(b, KiB, "gzip" if kind == "gzip" else "none")
    if kind == "gzip":
        payload = _gzip_zeros(BOMB)
    else:
        if "zstd" not in encodings:
            perform(b, Call("DELETE", f"/transfers/push/{tx}"))
            pytest.skip("the receiver has no zstd (python3-zstandard)")
        payload = (_zstd_forged_content_size(1 << 40) if kind == "zstd-forged-size"
                   else _zstd_zeros(BOMB, pledge=kind == "zstd-pledged-size"))
        headers[ENCODING_HEADER] = "zstd"
    _stat("examples")
    call = Call("PUT", f"/transfers/push/{tx}/0", payload, headers,
                route="/transfers/push/<tx>/<n>")
    findings = Findings()
    started = time.monotonic()
    with PeakRss(b.process.pid) as rss:
        check_call(findings, b, call, expect=(400,))
    elapsed = time.monotonic() - started
    if elapsed > 5:
        findings.add("a bomb took long to refuse", f"{call.describe()} -> {elapsed:.1f} s")
    if rss.growth > BOMB_MEMORY_LIMIT:
        findings.add("the receiver's memory followed the bomb",
                     f"{call.describe()} -> resident memory +{rss.growth // MiB} MiB "
                     f"(peak {rss.peak // MiB} MiB, {rss.baseline // MiB} MiB before, "
                     f"{rss.after // MiB} MiB after)")
    perform(b, Call("DELETE", f"/transfers/push/{tx}"))
    assert_servers_sound((b,), logs, before, findings)
    findings.check(f"{kind} bomb")


def test_push_unknown_encodings_are_400(fuzz: Fuzz) -> None:
    """Property 2: an ``X-Transfers-Encoding`` that is not ours is a 400."""
    b = fuzz.b
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {b.name: snapshot(b)}
    tx, _ = _open_bucket_of(b, 16, "none")
    known = set(OUR_ENCODINGS)
    # Header values travel as text: no control characters, and HTTP trims the ends.
    header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Zl", "Zp")),
                          max_size=40)
    values = st.one_of(header_text, st.sampled_from(
        ["GZIP", "Zstd", "NONE", "br", "deflate", "identity", "gzip, zstd", "x-gzip", "",
         "gzip;q=1", "zstd\u200b", "\uff47\uff5a\uff49\uff50", "x" * 4000])).filter(
        lambda v: v.strip(" \t") not in known)

    @fuzz_settings(60)
    @given(value=values, data=st.binary(min_size=16, max_size=16))
    def run(value: str, data: bytes) -> None:
        _stat("examples")
        call = Call("PUT", f"/transfers/push/{tx}/0", data,
                    {ENCODING_HEADER: value.encode().decode("latin-1")},
                    route="/transfers/push/<tx>/<n>")
        check_call(findings, b, call, expect=(400,))

    run()
    perform(b, Call("DELETE", f"/transfers/push/{tx}"))
    assert_servers_sound((b,), logs, before, findings)
    findings.check("unknown bucket encodings")


# == Deep JSON: its own server, since a failure may take the server down =================


DEEP = 2000


@pytest.mark.parametrize("shape", ["arrays", "objects"])
def test_deeply_nested_json_is_400(make_cluster: Callable[..., list[OrthancServer]],
                                   shape: str) -> None:
    """Property 1: a few kilobytes of nested brackets on each JSON route are a 400, and
    Orthanc stays up."""
    (server,) = make_cluster(["deep"])
    findings = Findings()
    opening, closing = ("[", "]") if shape == "arrays" else ('{"a":', "}")
    body = (opening * DEEP + "1" + closing * DEEP).encode()
    for route in ["/transfers/send", "/transfers/pull", "/transfers/lookup", "/transfers/push"]:
        _stat("examples")
        check_call(findings, server, Call("POST", route, body, route=route), expect=(400,))
    if not alive(server):
        findings.add("Orthanc is not healthy after the run", "GET /system")
    findings.check(f"JSON nested {DEEP} deep ({shape})")


# == After everything: health, logs, files =================================================


def test_zz_servers_sound_after_the_fuzzing(fuzz: Fuzz) -> None:
    """Property 1 and 4 over the whole module: both servers answer, neither logged a
    Python traceback, nothing was written outside the staging directories."""
    findings = Findings()
    for server in fuzz.servers:
        status = server.get("/system")
        assert status.status_code == 200, status.text
    assert_servers_sound(fuzz.servers, fuzz.logs, fuzz.start, findings)
    # The transaction held open since the start is still there and whole.
    held = fuzz.a.get(f"/transfers/push/{fuzz.tx}")
    assert held.status_code == 200 and held.json()["CountBuckets"] == 2, held.text
    findings.check("after the whole fuzzing run")

