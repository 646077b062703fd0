"""The receiving end of push transfers: the table of push transactions (reference §3.7-3.10, §11).

Same wire format as the original, with the improvements of reference §20:

* buckets are decoded and written outside the table's lock, so uploads to different
  transactions, and the buckets of one transaction, go in parallel (each transaction's
  :class:`DownloadArea` has its own lock; see :mod:`.concurrency` for the rules);
* every bucket goes through :meth:`DownloadArea.accept`, the step pull uses too: each
  instance is MD5-checked as soon as its last bucket lands; a mismatch forgets its
  buckets (the PUT that revealed it answers 400 CorruptedFile so the sender sends them
  again), and an instance that fails ``MAX_MD5_FAILURES`` times is refused (409);
* commit checks completeness and every MD5 *before* importing anything, and is
  idempotent: a retried commit of a committed transaction answers ``{}``;
* ``MaxPushTransactions`` never evicts an active transaction: an idle one goes, or the
  newcomer gets a retryable 503; idle transactions expire after
  ``PushTransactionTimeout``, or later if the sender (ours) said it would wait longer
  for this receiver in an outage (``OutageDeadline`` of the plan, plus a margin), so
  that a sender coming back after an outage finds what it sent;
* with ``ImportDuringTransfer`` (this receiver's option, or the sender's request),
  each verified instance is imported while the others are still arriving, and the
  commit waits only for the last ones;
* transactions live on disk (plan + manifest), survive a restart, and a sender that
  runs this plugin asks ``GET /transfers/push/{id}`` which buckets are held (an
  extension the original has not: it answers 405 there).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .buckets import PushPlan
from .encoding import Encoding, decode, local_encodings
from .errors import (
    BadRequest,
    Conflict,
    IntegrityError,
    RepeatedCorruption,
    ServiceUnavailable,
    StagingError,
    UnknownResource,
)
from .importing import ImportStream, import_area
from .protocol import MAX_COMMIT_WAIT, Compression
from .services import Services
from .staging import DownloadArea

#: A transaction with no request for this long may be evicted to make room (seconds).
EVICTABLE_AFTER = 60.0
#: An idle transaction outlives its sender's outage deadline by this much (seconds).
OUTAGE_MARGIN = 600.0
#: Committed transactions are remembered this long, for idempotent commits (seconds).
COMMITTED_MEMORY = 3600.0
TRANSACTION_FILE = "transaction.json"
_BUCKET_NUMBER = re.compile(r"[0-9]{1,9}")


@dataclass
class PushTransaction:
    id: str
    compression: Compression
    area: DownloadArea
    keep_idle: float                            # seconds before an idle one expires
    created: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    committing: bool = False
    stream: ImportStream | None = None          # ImportDuringTransfer
    arrival: threading.Condition = field(default_factory=threading.Condition)

    def abandon(self) -> None:
        """Stop importing and delete the staged files (the transaction is gone)."""
        if self.stream is not None:
            self.stream.abort()
        self.area.discard()

    def idle_for(self) -> float:
        return 0.0 if self.in_flight or self.committing else time.monotonic() - self.last_active

    def status(self) -> dict[str, Any]:
        pending = set(self.area.pending_buckets())
        return {"ID": self.id, "Path": f"/transfers/push/{self.id}",
                "Compression": self.compression.value,
                "Encodings": list(local_encodings()),
                "CountBuckets": len(self.area.buckets),
                "ReceivedBuckets": [i for i in range(len(self.area.buckets)) if i not in pending],
                "VerifiedInstances": len(self.area.verified),
                "CountInstances": len(self.area.instances)}


class PushReceiver:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._transactions: dict[str, PushTransaction] = {}
        self._committed: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._services.staging_root / "push"

    # -- lifecycle --------------------------------------------------------------------

    def restore(self) -> None:
        """Reopen the transactions a previous run left on disk; clean what is unusable."""
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in self.root.iterdir():
            try:
                meta = json.loads((directory / TRANSACTION_FILE).read_text())
                plan = DownloadArea.saved_plan(directory)
                keep_idle = float(meta.get("KeepIdle", self._timeout()))
                idle = time.time() - _last_written(directory)
                if plan is None or idle > keep_idle:
                    raise ValueError("expired or without plan")
                area = DownloadArea(directory, *plan)
                tx = PushTransaction(directory.name, Compression(meta["Compression"]), area,
                                     keep_idle, created=meta["Created"],
                                     last_active=time.monotonic() - idle)
                self._transactions[tx.id] = tx
            except (OSError, ValueError, KeyError, StagingError):
                shutil.rmtree(directory, ignore_errors=True)
        self._publish()

    def flush(self) -> None:
        """Record every verification on disk (Orthanc is stopping)."""
        with self._lock:
            transactions = list(self._transactions.values())
        for tx in transactions:
            tx.area.flush()

    def _timeout(self) -> float:
        return self._services.config.push_transaction_timeout

    def _keep_idle(self, plan: PushPlan) -> float:
        """How long this transaction may stay idle: the option, or the sender's outage
        deadline and a margin if longer."""
        waits = plan.outage_deadline + OUTAGE_MARGIN if plan.outage_deadline else 0.0
        return max(self._timeout(), waits)

    # -- routes -----------------------------------------------------------------------

    def create(self, plan: PushPlan) -> PushTransaction:
        if not self.root.exists():         # restore() makes it once Orthanc has started
            raise ServiceUnavailable("The push receiver is not ready yet: Orthanc is starting")
        free = shutil.disk_usage(self.root).free
        if plan.total_size > free:
            raise ServiceUnavailable(f"Not enough space in the staging directory for "
                                     f"{plan.total_size} bytes ({free} free)")
        expired: list[PushTransaction] = []
        evicted: PushTransaction | None = None
        try:
            with self._lock:
                expired = self._expire()
                if len(self._transactions) >= self._services.config.max_push_transactions:
                    evicted = self._evict_one_idle()        # 503 when none is idle
                tx = self._open(plan)
                self._transactions[tx.id] = tx
        finally:
            self._abandon(expired, evicted)
        self._services.metrics.add("created_push_count")
        self._publish()
        return tx

    def _open(self, plan: PushPlan) -> PushTransaction:
        tx_id = str(uuid.uuid4())
        directory = self.root / tx_id
        area = DownloadArea(directory, plan.instances, plan.buckets)
        tx = PushTransaction(tx_id, plan.compression, area, self._keep_idle(plan))
        if self._services.config.imports_during_transfer(plan.import_during_transfer):
            tx.stream = ImportStream(self._services, area, check=lambda: None,
                                     on_imported=lambda _: None)
        (directory / TRANSACTION_FILE).write_text(json.dumps(
            {"Compression": plan.compression.value, "Created": tx.created,
             "KeepIdle": tx.keep_idle}))
        return tx

    def _abandon(self, expired: list[PushTransaction], evicted: PushTransaction | None) -> None:
        """Out of the table's lock: abandoning waits for the imports in progress."""
        for tx in expired:
            tx.abandon()
        if evicted is not None:
            evicted.abandon()
            self._services.host.log_warning(
                f"An inactive push transaction has been discarded: {evicted.id}")
            self._services.metrics.add("aborted_push_count")

    def put(self, tx_id: str, index_text: str, body: bytes,
            encoding_name: str | None = None) -> None:
        """Bucket ``index_text``; ``encoding_name`` (our senders) overrides the compression."""
        tx = self._enter(tx_id)
        try:
            if not _BUCKET_NUMBER.fullmatch(index_text) \
                    or int(index_text) >= len(tx.area.buckets):
                raise UnknownResource(f"Push transaction {tx_id} has no bucket {index_text} "
                                      f"(it has {len(tx.area.buckets)})")
            if tx.stream is not None:
                tx.stream.raise_if_failed()     # Orthanc refused an instance: say so now
            index = int(index_text)
            bucket = tx.area.buckets[index]
            data = decode(body, _encoding(encoding_name, tx.compression), bucket.size)
            self._accept(tx, index, data)
            self._services.metrics.add("push_received_bucket_bytes", len(body))
        finally:
            self._leave(tx)
        with tx.arrival:
            tx.arrival.notify_all()

    def _accept(self, tx: PushTransaction, index: int, data: bytes) -> None:
        try:
            accepted = tx.area.accept(index, data)
        except RepeatedCorruption:
            self._services.metrics.add("corrupted_instances_count")
            raise
        if tx.stream is not None:
            for instance_id in accepted.verified:
                tx.stream.submit(instance_id)
        if accepted.corrupted:      # forgotten: the sender must send their buckets again
            self._services.metrics.add("corrupted_instances_count", len(accepted.corrupted))
            first = accepted.corrupted[0]
            raise IntegrityError(f"Bad MD5 sum in a transferred DICOM instance: {first}",
                                 instance=first)

    def status(self, tx_id: str) -> dict[str, Any]:
        with self._lock:
            if tx_id in self._committed:
                return {"ID": tx_id, "Committed": True}
        tx = self._get(tx_id)
        return {**tx.status(), "Committed": False}

    def commit(self, tx_id: str, wait: float = 0.0) -> None:
        """Import the transaction; with ``wait`` (our senders, which commit while their
        last buckets are on the wire), first wait up to that long for missing buckets."""
        if wait > 0:
            self._services.metrics.add("push_early_commit_count")
            with self._lock:
                tx = None if tx_id in self._committed else self._get(tx_id)
            if tx is not None:
                self._wait_for_buckets(tx, min(wait, MAX_COMMIT_WAIT))
        tx = self._claim_for_commit(tx_id)
        if tx is None:
            return                            # idempotent: it was imported already
        started = time.monotonic()
        self._services.metrics.add("push_total_time_spent_in_reception_ms",
                                   (time.time() - tx.created) * 1000)
        try:
            self._import(tx)
        finally:
            with self._lock:
                tx.committing = False
        with self._lock:
            self._transactions.pop(tx_id, None)
            self._committed[tx_id] = time.monotonic()
        tx.area.discard()
        metrics = self._services.metrics
        metrics.add("committed_push_count")
        metrics.add("push_total_received_bytes_count", tx.area.total_size)
        metrics.add("push_total_time_spent_in_commit_ms", (time.monotonic() - started) * 1000)
        self._publish()

    def _claim_for_commit(self, tx_id: str) -> PushTransaction | None:
        """The transaction, marked as committing; None if it was committed already."""
        with self._lock:
            if tx_id in self._committed:
                return None
            tx = self._get(tx_id)
            if tx.committing:
                raise Conflict(f"Push transaction {tx_id} is already being committed")
            tx.committing = True
            return tx

    def _import(self, tx: PushTransaction) -> None:
        """Every bucket is here: import what the stream (ImportDuringTransfer) has not."""
        missing = tx.area.pending_buckets()
        if missing:
            held = "only verified instances were" if tx.stream else "nothing was"
            raise Conflict(f"Push transaction {tx.id} misses {len(missing)} bucket(s), {held} "
                           f"imported (first missing: {missing[0]})")
        imported: set[str] = set()
        stream, tx.stream = tx.stream, None       # a retried commit imports the rest
        if stream is not None:
            stream.finish()
            imported = stream.imported
        import_area(self._services, tx.area, check=lambda: None, on_imported=lambda _: None,
                    imported=imported)

    def delete(self, tx_id: str) -> None:
        with self._lock:
            tx = self._get(tx_id)
            if tx.committing:
                raise Conflict(f"Push transaction {tx_id} is being committed")
            del self._transactions[tx_id]
        tx.abandon()
        self._services.metrics.add("discarded_push_count")
        self._publish()

    # -- internals --------------------------------------------------------------------

    def _wait_for_buckets(self, tx: PushTransaction, seconds: float) -> None:
        def settled() -> bool:
            # A bucket being checked counts as in flight: its MD5 may yet fail.
            with self._lock:
                if self._transactions.get(tx.id) is not tx:
                    return True
                busy = tx.in_flight > 0
            return not busy and not tx.area.count_pending()

        # Woken by each bucket that lands; the short timeout notices a transaction that
        # was deleted or expired meanwhile (notifying from there would invert lock order).
        deadline = time.monotonic() + seconds
        with tx.arrival:
            while not settled() and (left := deadline - time.monotonic()) > 0:
                tx.arrival.wait(min(left, 0.5))

    def _get(self, tx_id: str) -> PushTransaction:
        tx = self._transactions.get(tx_id)
        if tx is None:
            raise UnknownResource(f"Unknown push transaction: {tx_id}")
        return tx

    def _enter(self, tx_id: str) -> PushTransaction:
        with self._lock:
            tx = self._get(tx_id)
            if tx.committing:
                raise Conflict(f"Push transaction {tx_id} is being committed")
            tx.in_flight += 1
            tx.last_active = time.monotonic()
            return tx

    def _leave(self, tx: PushTransaction) -> None:
        with self._lock:
            tx.in_flight -= 1
            tx.last_active = time.monotonic()

    def _expire(self) -> list[PushTransaction]:
        """Drop the transactions idle for too long (under ``_lock``); the caller abandons
        them once the lock is released."""
        now = time.monotonic()
        expired = [t for t in self._transactions.values() if t.idle_for() > t.keep_idle]
        for tx in expired:
            del self._transactions[tx.id]
        for tx_id in [k for k, t in self._committed.items() if now - t > COMMITTED_MEMORY]:
            del self._committed[tx_id]
        return expired

    def _evict_one_idle(self) -> PushTransaction:
        """Drop the longest idle transaction (under ``_lock``), for the caller to abandon."""
        idle = [t for t in self._transactions.values() if t.idle_for() >= EVICTABLE_AFTER]
        if not idle:
            raise ServiceUnavailable(
                f"All {len(self._transactions)} push transactions are active "
                "(Transfers.MaxPushTransactions); retry later")
        victim = max(idle, key=lambda t: t.idle_for())
        del self._transactions[victim.id]
        return victim

    def _publish(self) -> None:
        with self._lock:
            active = len(self._transactions)
        limit = self._services.config.max_push_transactions
        self._services.metrics.set("available_push_count", max(0, limit - active))
        self._services.metrics.set("active_push_count", active)


def _last_written(directory: Path) -> float:
    """When a transaction last received something (its newest file), wall clock: what
    is left of its idle time survives a restart."""
    return max((path.stat().st_mtime for path in directory.iterdir()),
               default=directory.stat().st_mtime)


def _encoding(name: str | None, compression: Compression) -> Encoding:
    if name is None:
        return Encoding(compression.value)
    if name not in local_encodings():
        raise BadRequest(f"Unknown bucket encoding: {name!r}")
    return Encoding(name)
