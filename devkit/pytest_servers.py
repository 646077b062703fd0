"""A pytest plugin: real Orthanc servers and WAN proxies as fixtures, logs in reports.

Loaded by the repository's top-level ``conftest.py`` for every test directory. Every
server a test starts is registered, so its log is attached to the report when the test
fails, and it is stopped by PID when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from .orthanc_server import OrthancServer, start_cluster
from .wan_proxy import LinkProfile, WanProxy

ClusterFactory = Callable[..., list[OrthancServer]]
LIVE: list[OrthancServer] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in LIVE:
            report.sections.append((f"Orthanc {server.name} log", server.log_tail(80)))


def register(servers: list[OrthancServer]) -> list[OrthancServer]:
    LIVE.extend(servers)
    return servers


def release(servers: list[OrthancServer]) -> None:
    for server in servers:
        LIVE.remove(server)
        server.cleanup()


@pytest.fixture
def make_cluster() -> Iterator[ClusterFactory]:
    """Start servers that know each other as peers; stopped when the test ends."""
    started: list[OrthancServer] = []

    def make(names: list[str], **kwargs: Any) -> list[OrthancServer]:
        servers = register(start_cluster(names, **kwargs))
        started.extend(servers)
        return servers

    yield make
    release(started)


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
