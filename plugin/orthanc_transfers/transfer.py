"""What pull and push jobs share: their state, counters, Content and failure reason."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError, PeerError, RetriesExhausted
from .protocol import TransferQuery, round_kb, round_mb
from .workers import InFlight

if TYPE_CHECKING:
    from .services import Services

#: Progress shares of the phases: lookup, transfer; the import takes the rest.
LOOKUP_SHARE, DOWNLOAD_SHARE = 0.02, 0.88


class TransferStats:
    """Counters shown in a job's Content (reference §8.2) and its progress."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total_instances = 0
        self.total_size = 0
        self.skipped_instances = 0
        self.network_bytes = 0            # compressed bytes on the wire
        self.payload_bytes = 0            # bytes of the buckets done in this run
        self.done_bytes = 0               # bytes of every bucket done, this run or before
        self.completed_queries = 0
        self.retried_queries = 0          # failed attempts that were tried again
        self.total_buckets = 0
        self.reused_buckets = 0           # held from an earlier attempt: not sent again
        self.imported = 0
        self.to_import = 0
        self.by_encoding: dict[str, list[int]] = {}   # encoding -> [buckets, bytes, wire]
        self.phase = "Pending"
        self.started = 0.0
        self.last_query = 0.0

    def bucket_done(self, network: int, payload: int, encoding: str) -> None:
        with self.lock:
            counts = self.by_encoding.setdefault(encoding, [0, 0, 0])
            counts[0] += 1
            counts[1] += payload
            counts[2] += network
            self.network_bytes += network
            self.payload_bytes += payload
            self.done_bytes += payload
            self.completed_queries += 1
            self.last_query = time.monotonic()

    def retried(self, _: BaseException) -> None:
        with self.lock:
            self.retried_queries += 1

    def speed_kbs(self) -> int:
        """Network KiB/s since the transfer phase started (reference §7)."""
        elapsed = self.last_query - self.started
        return int(self.network_bytes / 1024 / elapsed) if elapsed > 0.01 else 0

    def progress(self) -> float:
        if self.phase in ("Pending", "Lookup"):
            return 0.0
        download = self.done_bytes / self.total_size if self.total_size else 1.0
        share = LOOKUP_SHARE + DOWNLOAD_SHARE * download
        if self.to_import:
            share += (1 - LOOKUP_SHARE - DOWNLOAD_SHARE) * self.imported / self.to_import
        return min(share, 0.99)


def failure_reason(error: BaseException, peer: str) -> dict[str, Any]:
    """Who failed and where, for the job's Content (the original logs it only)."""
    cause = error.last if isinstance(error, RetriesExhausted) else error
    reason: dict[str, Any] = {"Peer": peer, "Message": str(error)}
    if isinstance(cause, PeerError):
        reason.update({"URI": cause.uri, "Status": cause.status})
    if isinstance(cause, IntegrityError) and cause.instance:
        reason["Instance"] = cause.instance
    return reason


def transfer_content(query: TransferQuery, stats: TransferStats,
                     failure: dict[str, Any] | None, moved: str) -> dict[str, Any]:
    """The Content of a pull (``moved`` = "Downloaded") or push ("Uploaded") job:
    the fields of the original (reference §8.2) and ours."""
    content: dict[str, Any] = {
        "Peer": query.peer,
        "Resources": list(query.raw_resources),
        "Compression": query.compression.value,
        "TotalInstances": stats.total_instances,
        "TotalSizeMB": round_mb(stats.total_size),
        f"{moved}SizeMB": round_mb(stats.network_bytes),
        "CompletedHttpQueries": stats.completed_queries,
        "RetriedHttpQueries": stats.retried_queries,
        "TotalBuckets": stats.total_buckets,
        "ReusedBuckets": stats.reused_buckets,
        "Phase": stats.phase,
    }
    if stats.by_encoding:
        # Ours: how the buckets of this run travelled, so a choice of encoding is visible.
        with stats.lock:
            content["Encodings"] = {
                name: {"Buckets": buckets, "Bytes": size, "WireBytes": wire}
                for name, (buckets, size, wire) in sorted(stats.by_encoding.items())}
    if stats.started:
        content["NetworkSpeedKBs"] = stats.speed_kbs()
        content[f"{moved}SizeKB"] = round_kb(stats.network_bytes)
    if failure:
        content["FailureReason"] = failure
    return content


class TransferWork:
    """The part of ``PullWork`` and ``PushWork`` that is the same: the query, the
    counters, the failure, the peer's encodings, the requests in flight, and a staging
    folder ``<staging>/<kind>/<job id>`` that goes with the job."""

    kind = ""                  # folder under the staging directory: "pull" or "send"

    def __init__(self, services: Services, job_id: str, request: dict[str, Any]) -> None:
        self.query = TransferQuery.from_wire(request)
        self.job_id = job_id
        self._services = services
        self.stats = TransferStats()
        self.failure: dict[str, Any] | None = None
        self._peer_encodings: frozenset[str] = frozenset()
        self._in_flight = InFlight(services.config.threads)

    @property
    def directory(self) -> Path:
        return self._services.staging_root / self.kind / self.job_id

    def progress(self) -> float:
        return self.stats.progress()

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
