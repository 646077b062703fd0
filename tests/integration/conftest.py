"""Fixtures of the integration tests: real Orthanc servers, real DICOM, no mocks.

Servers listen on free loopback ports with temporary storage and the plugin loaded;
``make_cluster`` and ``make_proxy`` come from ``devkit.pytest_servers`` (loaded by the
top-level ``conftest.py``), which also attaches server logs to failure reports.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, start_cluster
from devkit.pytest_servers import register, release


@pytest.fixture(scope="session")
def study_files() -> list[bytes]:
    """20 CT slices and one 20 MiB multi-frame instance (split into 3 buckets)."""
    return dicom_data.mixed_study(ct_slices=20, multiframe_mb=20.0)


@pytest.fixture(scope="session")
def sample_files() -> list[bytes]:
    """pydicom's bundled files: many transfer syntaxes, compressed ones included."""
    return dicom_data.pydicom_samples()


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[OrthancServer, OrthancServer]]:
    """Two peers ``a`` and ``b`` shared by a module; tests wipe what they use."""
    a, b = register(start_cluster(["a", "b"]))
    yield a, b
    release([a, b])
