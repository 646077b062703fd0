"""Fixtures of the load tests: real Orthanc servers, real DICOM, big volumes.

Load tests are marked ``load`` and run only when asked for (``-m load``, or the
environment variable ``ORTHANC_TRANSFERS_LOAD=1``): a plain ``pytest tests`` skips them,
they take minutes and gigabytes. Probes and helpers are in ``load_probes.py``; the
figures of every test go to ``artifacts/load-figures.json`` at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from load_probes import ClusterFactory

from devkit.orthanc_server import REPO, OrthancServer, start_cluster

LOAD_ENV = "ORTHANC_TRANSFERS_LOAD"
FIGURES_PATH = REPO / "artifacts" / "load-figures.json"

_LIVE: list[OrthancServer] = []


def pytest_configure(config: pytest.Config) -> None:
    # Until pyproject's [tool.pytest.ini_options].markers lists it.
    config.addinivalue_line("markers", "load: long load tests, run by make test-load")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "load" in (config.getoption("markexpr", "") or "") or os.environ.get(LOAD_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"load test: run with -m load (or {LOAD_ENV}=1)")
    for item in items:
        if item.get_closest_marker("load") is not None:
            item.add_marker(skip)


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
