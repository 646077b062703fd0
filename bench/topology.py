"""A fresh source/target pair of Orthanc servers, with a WAN proxy on every path between them.

The source declares the target (peer ``target``, DICOMweb server ``target``) through a
proxy in front of the target; the target declares the source (peer ``source``) through a
proxy in front of the source. So push, STOW and ``/peers/store`` cross the first proxy,
and pull jobs cross the second. On the ``lan`` profile there is no proxy at all.
The benchmark itself talks to both servers directly.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.orthanc_server import OrthancServer
from devkit.wan_proxy import LinkProfile, WanProxy

SETTINGS_LOG = "Transfers accelerator settings: "
SOURCE = "source"
TARGET = "target"

#: Settings of both servers. No storage cache, so reads are not flattered; long HTTP
#: timeouts, so that a big STOW or peer request on a slow link is not cut at 60 s.
BASE_CONFIG: dict[str, Any] = {
    "MaximumStorageCacheSize": 0,
    "HttpTimeout": 600,
}


def is_wan(profile: LinkProfile) -> bool:
    return bool(profile.delay or profile.bandwidth or profile.reset_rate)


@dataclass
class Pair:
    profile: LinkProfile
    source: OrthancServer
    target: OrthancServer
    to_target: WanProxy | None      # used by the source to reach the target
    to_source: WanProxy | None      # used by the target to reach the source

    def wire_bytes(self) -> int | None:
        """Bytes both proxies passed, in both directions; None without proxies."""
        if self.to_target is None or self.to_source is None:
            return None
        total = 0
        for proxy in (self.to_target, self.to_source):
            with proxy.counters.lock:
                total += proxy.counters.up + proxy.counters.down
        return total

    def resets(self) -> int:
        return sum(p.counters.resets for p in (self.to_target, self.to_source) if p is not None)

    def connections(self) -> int:
        return sum(p.counters.connections for p in (self.to_target, self.to_source)
                   if p is not None)

    def pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        for role, server in (("src", self.source), ("dst", self.target)):
            if server.process is None:
                raise RuntimeError(f"Orthanc {server.name} is not running")
            pids[role] = server.process.pid
        return pids

    def plugin_settings(self) -> dict[str, Any] | None:
        """The effective settings the plugin logged at start-up on the source."""
        for line in self.source.log_tail(400).splitlines():
            if SETTINGS_LOG in line:
                with contextlib.suppress(ValueError):
                    settings: dict[str, Any] = json.loads(line.split(SETTINGS_LOG, 1)[1])
                    return settings
        return None

    def close(self) -> None:
        for server in (self.source, self.target):
            server.cleanup()
        for proxy in (self.to_target, self.to_source):
            if proxy is not None:
                proxy.stop()


def start_pair(profile: LinkProfile, *, transfers: dict[str, Any] | None = None,
               script: Path | None = None) -> Pair:
    """Start both servers (plugin and DICOMweb loaded) and the proxies between them.

    ``transfers`` is merged into the ``Transfers`` section of both servers; ``script``
    replaces ``plugin/transfers.py`` (see :mod:`bench.snapshot`).
    """
    config: dict[str, Any] = {**BASE_CONFIG, "Transfers": dict(transfers or {})}
    if script is not None:
        config["PythonScript"] = str(script)
    source = OrthancServer(SOURCE, config=config, dicomweb=True)
    target = OrthancServer(TARGET, config=config, dicomweb=True)
    to_target = to_source = None
    if is_wan(profile):
        to_target = WanProxy(target.http_port, profile, seed=1).start()
        to_source = WanProxy(source.http_port, profile, seed=2).start()
    pair = Pair(profile, source, target, to_target, to_source)
    target_url = to_target.url if to_target else target.url + "/"
    source_url = to_source.url if to_source else source.url + "/"
    source.config["OrthancPeers"] = {TARGET: {"Url": target_url}}
    source.config["DicomWeb"] = {"Enable": True,
                                 "Servers": {TARGET: [target_url + "dicom-web/"]}}
    target.config["OrthancPeers"] = {SOURCE: {"Url": source_url}}
    target.config["DicomWeb"] = {"Enable": True}
    try:
        source.start()
        target.start()
    except BaseException:
        with contextlib.suppress(Exception):
            pair.close()
        raise
    return pair
