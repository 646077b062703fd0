"""Fixtures of the integration tests: real Orthanc servers, real DICOM, no mocks.

Servers listen on free loopback ports with temporary storage and the plugin loaded.
Every server a test starts is registered, so its log is attached to the report when
the test fails, and stopped by PID afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, start_cluster
from devkit.wan_proxy import LinkProfile, WanProxy

_LIVE: list[OrthancServer] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _LIVE:
            report.sections.append((f"Orthanc {server.name} log", server.log_tail(80)))


@pytest.fixture(scope="session")
def study_files() -> list[bytes]:
    """20 CT slices and one 20 MiB multi-frame instance (split into 3 buckets)."""
    return dicom_data.mixed_study(ct_slices=20, multiframe_mb=20.0)


@pytest.fixture(scope="session")
def sample_files() -> list[bytes]:
    """pydicom's bundled files: many transfer syntaxes, compressed ones included."""
    return dicom_data.pydicom_samples()


ClusterFactory = Callable[..., list[OrthancServer]]


@pytest.fixture
def make_cluster() -> Iterator[ClusterFactory]:
    """Start servers that know each other as peers; stopped when the test ends."""
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


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[OrthancServer, OrthancServer]]:
    """Two peers ``a`` and ``b`` shared by a module; tests wipe what they use."""
    a, b = start_cluster(["a", "b"])
    _LIVE.extend((a, b))
    yield a, b
    for server in (a, b):
        _LIVE.remove(server)
        server.cleanup()


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., WanProxy]]:
    proxies: list[WanProxy] = []

    def make(target: OrthancServer, profile: LinkProfile | None = None) -> WanProxy:
        proxy = WanProxy(target.http_port, profile).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
