"""What jobs and handlers share: settings, Orthanc, peers, staging and metrics.

Built once by ``app.py``; passed to every job so that nothing reads globals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .concurrency import Throttles
from .config import PeerConfig, TransfersConfig, find_peer
from .errors import TransfersError
from .hostapi import Host
from .httpclient import HttpPools
from .metrics import Metrics
from .peers import PeerClient
from .protocol import InstanceInfo
from .retry import RetryPolicy
from .source import InstanceSource


@dataclass
class Services:
    host: Host
    config: TransfersConfig
    originator: str
    connections: HttpPools
    source: InstanceSource
    metrics: Metrics
    throttles: Throttles

    @property
    def staging_root(self) -> Path:
        return Path(self.config.staging_directory)

    def peer(self, name: str) -> PeerConfig:
        return find_peer(self.host.configuration(), name)

    def client(self, peer: PeerConfig | str) -> PeerClient:
        config = self.peer(peer) if isinstance(peer, str) else peer
        return PeerClient(config, self.config, self.connections)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.config.max_http_retries,
                           backoff_factor=self.config.http_retry_backoff,
                           backoff_max=self.config.http_retry_backoff_max)

    def publish_cache_metrics(self) -> None:
        cache = self.source.cache
        self.metrics.set("used_cache_size", cache.used)
        self.metrics.set("cache_hit_count", cache.hits)
        self.metrics.set("cache_miss_count", cache.misses)

    def prefetch_first(self, instances: Sequence[InstanceInfo]) -> None:
        """Read, in the background, the files a transfer sends first (two waves of
        buckets), while a round trip (lookup answer, push creation) is on the link."""
        config = self.config
        self.source.prefetch(instances, budget=min(config.cache_size // 2,
                                                   2 * config.threads * config.bucket_size),
                             split_size=2 * config.bucket_size)

    def stored_md5(self, instance_id: str) -> str | None:
        """MD5 of an instance this Orthanc already stores, or None."""
        try:
            return self.host.rest_get(
                f"/instances/{instance_id}/attachments/dicom/md5").decode().strip()
        except TransfersError:     # absent, or stored without MD5: not skippable
            return None
