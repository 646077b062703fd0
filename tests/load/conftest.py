"""Fixtures of the load tests: real Orthanc servers, real DICOM, big volumes.

Servers come from ``make_cluster`` (``devkit.pytest_servers``, loaded by the top-level
``conftest.py``). Load tests are marked ``load``, which pyproject's ``addopts``
deselects: they run with ``-m load`` (``make test-load``) and take minutes and
gigabytes. Probes and helpers are in ``load_probes.py``; the figures of every test are merged into
``artifacts/load-figures.json`` at the end of the session.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from devkit.orthanc_server import REPO

FIGURES_PATH = REPO / "artifacts" / "load-figures.json"

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
