"""HTTP calls of a fuzzing run, what is wrong with their answers, and the bookkeeping.

A property never stops at its first failing input: :func:`check_call` adds every
problem to :class:`Findings`, grouped by kind (route and symptom), and
:meth:`Findings.check` fails the test once, with the shortest inputs of each kind as
requests that reproduce them. :data:`TALLY` counts, per test, the examples run and the
requests sent, so that a run says how much it actually tried.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

import pytest
import requests
from hypothesis import HealthCheck, Phase, settings

from ..orthanc_server import OrthancServer


class Tally:
    """Per test: hypothesis examples run and HTTP requests sent."""

    def __init__(self) -> None:
        #: The test being run; set by the suite's fixtures.
        self.test = "(setup)"
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, name: str, amount: int = 1) -> None:
        entry = self.counts.setdefault(self.test, {"examples": 0, "requests": 0})
        entry[name] += amount

    def summary(self, seconds: float) -> list[str]:
        lines = [f"fuzz: {name}: {s['examples']} examples, {s['requests']} requests"
                 for name, s in self.counts.items()]
        examples = sum(s["examples"] for s in self.counts.values())
        sent = sum(s["requests"] for s in self.counts.values())
        lines.append(f"fuzz: total {examples} examples, {sent} requests (inputs tried) in "
                     f"{seconds:.1f} s")
        return lines


#: One per process: :func:`perform` counts into it without being handed it.
TALLY = Tally()


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
    """Derandomized so that CI is reproducible, without shrinking so that the run stays
    bounded (:class:`Findings` reports the shortest inputs instead)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=list(HealthCheck))


def q(text: str) -> str:
    """One path segment or query value, every reserved character escaped."""
    return urllib.parse.quote(text, safe="")


def short(value: str | bytes, limit: int = 160) -> str:
    """``repr`` of ``value``, cut so that a report of a 100 KB input stays readable."""
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
        parts = [self.method, short(self.path, 200)]
        if self.headers:
            parts.append(f"headers={self.headers!r}")
        if self.body:
            parts.append(f"body={short(self.body)}")
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
    TALLY.add("requests")
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
    """What is wrong with an answer, or None: a 500, a traceback, a 4xx body that is not
    Orthanc-style JSON (``HttpStatus``, ``Message``), a 2xx body that is not JSON."""
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
    """Send ``call`` and add to ``findings`` what is wrong with the answer, or an
    answer whose status is not in ``expect``; the answer, if there was one."""
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
