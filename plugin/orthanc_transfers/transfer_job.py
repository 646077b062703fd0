"""What pull and push jobs share: the shape of a run, counters, Content, failure reason."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .chooser import EncodingChooser
from .concurrency import InFlight
from .errors import IntegrityError, PeerError, PeerUnreachable, TransfersError, last_error
from .metrics import Metrics
from .outage import OutageLog, OutagePolicy, is_outage, wait_before_probe
from .peers import peer_answers
from .protocol import Compression, TransferQuery, round_kb, round_mb

if TYPE_CHECKING:
    from .jobs import RunContext
    from .peers import PeerClient
    from .services import Services

Prepared = TypeVar("Prepared")
#: Progress shares of the phases: lookup, transfer; the import takes the rest.
LOOKUP_SHARE, DOWNLOAD_SHARE = 0.02, 0.88


class TransferStats:
    """Counters shown in a job's Content (reference §8.2) and its progress.

    Written by the job's runner and its pool threads, read by REST handlers: every
    write and every read of more than one field takes ``lock``. One attempt of a run has
    its own; ``retried`` carries the retries of the earlier attempts over.
    """

    def __init__(self, metrics: Metrics | None = None, retried: int = 0) -> None:
        self.lock = threading.Lock()
        self._metrics = metrics
        self.total_instances = 0
        self.total_size = 0
        self.skipped_instances = 0
        self.network_bytes = 0            # compressed bytes on the wire
        self.done_bytes = 0               # bytes of every bucket done, this run or before
        self.completed_queries = 0
        self.retried_queries = retried    # failed requests that were tried again
        self.total_buckets = 0
        self.reused_buckets = 0           # held from an earlier attempt: not sent again
        self.imported = 0
        self.to_import = 0
        self.by_encoding: dict[str, list[int]] = {}   # encoding -> [buckets, bytes, wire]
        self.phase = "Pending"
        self.started = 0.0
        self.last_query = 0.0

    def set_phase(self, phase: str) -> None:
        with self.lock:
            self.phase = phase

    def planned(self, instances: int, size: int, skipped: int = 0) -> None:
        with self.lock:
            self.total_instances, self.total_size = instances, size
            self.skipped_instances = skipped

    def transfer_starts(self, buckets: int, reused: int, done_bytes: int) -> None:
        """The transfer phase begins: ``reused`` buckets (``done_bytes``) need no request."""
        with self.lock:
            self.phase = "Transfer"
            self.total_buckets, self.reused_buckets = buckets, reused
            self.done_bytes = done_bytes
            self.started = self.last_query = time.monotonic()

    def import_starts(self, instances: int) -> None:
        with self.lock:
            self.to_import = instances

    def imported_one(self) -> None:
        with self.lock:
            self.imported += 1

    def bucket_done(self, network: int, payload: int, encoding: str) -> None:
        with self.lock:
            counts = self.by_encoding.setdefault(encoding, [0, 0, 0])
            counts[0] += 1
            counts[1] += payload
            counts[2] += network
            self.network_bytes += network
            self.done_bytes += payload
            self.completed_queries += 1
            self.last_query = time.monotonic()

    def retried(self, _: BaseException) -> None:
        with self.lock:
            self.retried_queries += 1
        if self._metrics is not None:
            self._metrics.add("http_retries_count")

    def speed_kbs(self) -> int:
        """Network KiB/s since the transfer phase started (reference §7); under ``lock``."""
        elapsed = self.last_query - self.started
        return int(self.network_bytes / 1024 / elapsed) if elapsed > 0.01 else 0

    def progress(self) -> float:
        with self.lock:
            if self.phase in ("Pending", "Lookup"):
                return 0.0
            download = self.done_bytes / self.total_size if self.total_size else 1.0
            share = LOOKUP_SHARE + DOWNLOAD_SHARE * download
            if self.to_import:
                share += (1 - LOOKUP_SHARE - DOWNLOAD_SHARE) * self.imported / self.to_import
        return min(share, 0.99)


def failure_reason(error: BaseException, peer: str) -> dict[str, Any]:
    """Who failed and where, for the job's Content (the original logs it only)."""
    cause = last_error(error)
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
    with stats.lock:
        content = _counters(query, stats, moved)
    if failure:
        content["FailureReason"] = failure
    return content


def _counters(query: TransferQuery, stats: TransferStats, moved: str) -> dict[str, Any]:
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
        content["Encodings"] = {
            name: {"Buckets": buckets, "Bytes": size, "WireBytes": wire}
            for name, (buckets, size, wire) in sorted(stats.by_encoding.items())}
    if stats.started:
        content["NetworkSpeedKBs"] = stats.speed_kbs()
        content[f"{moved}SizeKB"] = round_kb(stats.network_bytes)
    return content


class TransferWork(Generic[Prepared]):
    """The shape of every transfer, pull or push: what they share is here, what differs
    is three steps that each subclass writes.

    The job's state is the query, the counters, the failure, the peer's encodings, the
    requests in flight, and a staging folder ``<staging>/<kind>/<job id>`` that goes with
    the job (a resume continues from it).
    """

    kind = ""                  # folder under the staging directory: "pull" or "send"

    def __init__(self, services: Services, job_id: str, request: dict[str, Any]) -> None:
        self.query = TransferQuery.from_wire(request)
        self.job_id = job_id
        self._services = services
        self.stats = TransferStats()
        self.outages = OutageLog()
        self.failure: dict[str, Any] | None = None
        self._peer_encodings: frozenset[str] = frozenset()
        self._in_flight = InFlight(services.config.threads)

    def run(self, context: RunContext) -> None:
        """Attempts until one succeeds: prepare (what to move, what the other side holds
        already), move the buckets, finish (import or commit). An attempt that failed
        because the peer is away is followed by a wait for it (:meth:`_ride_out`), then
        by the next attempt, which continues from what is staged. A failure is kept for
        the Content, and the staging folder for a resubmit; a stop signal is not a
        failure."""
        self.failure = None
        self.outages = OutageLog()
        self.stats = TransferStats(self._services.metrics)
        client: PeerClient | None = None
        try:
            client = self._services.client(self.query.peer)
            while not self._attempt(client, context):
                pass
        except TransfersError as e:
            self.failure = failure_reason(e, self.query.peer)
            if client is not None:
                self._failed(client, e)
            raise
        self.stats.set_phase("Done")
        self.discard()

    def _attempt(self, client: PeerClient, context: RunContext) -> bool:
        """One attempt; False if the peer was away and has come back."""
        self.stats = TransferStats(self._services.metrics, self.stats.retried_queries)
        try:
            prepared = self._prepare(client, context)
            if prepared is not None:
                self._move(client, prepared, context)
                self._finish(client, prepared, context)
            return True
        except TransfersError as e:
            if not is_outage(e):
                raise
            self._ride_out(client, e, context)
            return False

    def _ride_out(self, client: PeerClient, error: TransfersError, context: RunContext) -> None:
        """Wait, probing the peer, until it answers; past the deadline, fail. An attempt
        that moved buckets ended the previous outage; one that did not continues it."""
        policy = self._outage_policy()
        if policy.deadline <= 0:
            raise error
        metrics, peer = self._services.metrics, client.peer.name
        if self.stats.completed_queries:
            self.outages.end()
        outage, new = self.outages.begin(peer, str(error), time.monotonic())
        if new:
            metrics.add("outages_count")
        self.stats.set_phase("Waiting")
        with context.waiting():
            while wait_before_probe(self.outages, outage, policy, context, metrics):
                if peer_answers(client):
                    break
            else:
                cause = last_error(error)
                raise PeerUnreachable(
                    f"Peer {peer} stayed unreachable for longer than the outage deadline "
                    f"({policy.deadline:g} s, Transfers.OutageDeadline); last error: "
                    f"{cause}", peer=peer, uri=getattr(cause, "uri", "")) from error
        self.outages.resumed()

    def _outage_policy(self) -> OutagePolicy:
        return OutagePolicy(self._services.config.outage_deadline_of(self.query.outage_deadline))

    # -- the steps of a transfer ------------------------------------------------------

    def _prepare(self, client: PeerClient, context: RunContext) -> Prepared | None:
        """Lookup and plan; None when there is nothing left to move or finish."""
        raise NotImplementedError

    def _move(self, client: PeerClient, prepared: Prepared, context: RunContext) -> None:
        raise NotImplementedError

    def _finish(self, client: PeerClient, prepared: Prepared, context: RunContext) -> None:
        raise NotImplementedError

    def _failed(self, client: PeerClient, error: TransfersError) -> None:
        """Called once the attempt failed (not when it was stopped)."""

    # -- what the steps share ---------------------------------------------------------

    def _content(self, moved: str) -> dict[str, Any]:
        """The Content of the original and ours, with the outages of this run."""
        content = transfer_content(self.query, self.stats, self.failure, moved)
        content.update(self.outages.content(self._outage_policy(), time.monotonic()))
        return content

    def _chooser(self, compression: Compression) -> EncodingChooser:
        config = self._services.config
        return EncodingChooser(compression.value, self._peer_encodings,
                               gzip_level=config.gzip_level, threads=config.threads,
                               cores=os.cpu_count() or 1, rtt=self._in_flight.rtt)

    @property
    def directory(self) -> Path:
        return self._services.staging_root / self.kind / self.job_id

    def progress(self) -> float:
        return self.stats.progress()

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
