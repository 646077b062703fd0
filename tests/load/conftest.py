"""Fixtures of the load tests: real Orthanc servers, real DICOM, big volumes.

Load tests are marked ``load``, which pyproject's ``addopts`` deselects: they run with
``-m load`` (``make test-load``) and take minutes and gigabytes. Probes and helpers are
in ``load_probes.py``; the figures of every test are merged into
``artifacts/load-figures.json`` at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from load_probes import ClusterFactory

from devkit.orthanc_server import REPO, OrthancServer, start_cluster

FIGURES_PATH = REPO / "artifacts" / "load-figures.json"

_LIVE: list[OrthancServer] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _LIVE:
            report.sections.append((f"Orthanc {server.name} log", server.log_tail(80)))



@pytest.fixture
def make_cluster() -> Iterator[ClusterFactory]:
    """Start servers that know each other as peers; stopped and removed when the test ends."""
    started: list[OrthancServer] = []

    def make(names: list[str], **kwargs: Any) -> list[OrthancServer]:
        servers = start_cluster(names, **kwargs)
        started.extend(servers)
        _LIVE.extend(servers)
        return servers

    yield make
    for server in started:
        _LIVE.remove(server)
        server.cleanup()


@pytest.fixture(scope="session")
def figures() -> Iterator[dict[str, Any]]:
    """Figures by test name; merged into ``artifacts/load-figures.json`` at the end."""
    collected: dict[str, Any] = {}
    yield collected
    if not collected:
        return
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(FIGURES_PATH.read_text())
    FIGURES_PATH.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_PATH.write_text(json.dumps({**previous, **collected}, indent=2) + "\n")
