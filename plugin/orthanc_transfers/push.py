"""The ``PushTransfer`` job: the sending end of push mode (reference §5.3).

Expand the resources, describe each instance from what Orthanc stores (no file is read
to start), plan buckets (no URL cap), open a transaction with ``POST /transfers/push``,
``PUT`` the buckets on ``Threads`` threads, then ``POST .../commit`` (to a receiver of
ours, as soon as the last bucket has started: it waits for the buckets in flight, so
the commit's round trip overlaps the end of the upload). The ``Path`` of
the creation answer is followed verbatim and its cookies are replayed (sticky load
balancers), with the headers of reference §5.5.

Resuming: the transaction's ``Path`` is kept in the job's staging folder. When the job
runs again (resume, resubmit, restart) and the receiver runs this plugin, ``GET {Path}``
tells which buckets it holds and only the others are sent. The transaction is deleted
only when the receiver refused the data; after a network failure or a cancel it stays,
so that a resubmit continues (the receiver expires abandoned ones).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .buckets import Bucket, PushPlan, plan_buckets, slices_first
from .chooser import EncodingChooser
from .concurrency import Background, InFlight, run_parallel
from .encoding import ENCODING_HEADER, SERVER_SECONDS_HEADER, Encoding, encode
from .errors import (
    PeerCorruption,
    PeerError,
    PeerHttpError,
    RetriesExhausted,
    TransfersError,
    last_error,
)
from .httpclient import HttpAnswer
from .jobs import RunContext
from .peers import PeerAnswer, PeerClient
from .protocol import COMMIT_WAIT_HEADER, MAX_COMMIT_WAIT, peer_encodings, require_fields
from .retry import RetryPolicy, run_with_retries
from .services import Services
from .staging import plan_signature
from .transfer_job import TransferStats, TransferWork

PUSH_JOB_TYPE = "PushTransfer"
STATE_FILE = "push.json"
#: Rounds of "which buckets are missing?" before commit (our receivers only).
COMPLETION_ROUNDS = 3


@dataclass
class Outgoing:
    """What one push attempt sends: the plan, and the buckets the receiver holds."""

    plan: PushPlan
    held: set[int]


class PushWork(TransferWork[Outgoing]):
    kind = "send"

    def __init__(self, services: Services, job_id: str, request: dict[str, Any]) -> None:
        super().__init__(services, job_id, request)
        self._headers: dict[str, str] = {}
        self._path = ""
        self._early: Background | None = None

    # -- Work protocol ----------------------------------------------------------------

    def content(self) -> dict[str, Any]:
        content = self._content("Uploaded")
        if self._path:
            content["RemoteTransaction"] = self._path
        if self.query.import_during_transfer is not None:      # else the receiver decides
            content["ImportDuringTransfer"] = self.query.import_during_transfer
        return content

    # -- the steps of a transfer ------------------------------------------------------

    def _prepare(self, client: PeerClient, context: RunContext) -> Outgoing | None:
        """Plan from what Orthanc stores, then open (or reopen) the transaction."""
        plan = self._plan()
        self._services.prefetch_first(plan.instances)
        held = self._open_transaction(client, plan, context)
        return Outgoing(plan, held) if held is not None else None

    def _move(self, client: PeerClient, outgoing: Outgoing, context: RunContext) -> None:
        """PUT what the receiver lacks; a receiver of ours is sent the commit early."""
        plan = outgoing.plan
        self.stats.transfer_starts(
            len(plan.buckets), len(outgoing.held),
            sum(plan.buckets[i].size for i in outgoing.held if i < len(plan.buckets)))
        upload = self._upload(client, plan, context)
        # A commit sent while the last buckets are still on the wire (receivers of ours).
        early = Background(lambda: self._send_commit(client, wait=True), "TF-PUSH-COMMIT") \
            if self._peer_encodings else None
        pending = slices_first(plan.buckets, (i for i in range(len(plan.buckets))
                                              if i not in outgoing.held))
        for _ in range(COMPLETION_ROUNDS):
            upload.dropped.clear()
            run_parallel(pending, upload.put, self._in_flight, context.check, "TF-PUSH",
                         on_drained=early.start if early and not early.started else None)
            if not upload.dropped.is_set():
                break           # every PUT was accepted: no round trip to ask what is held
            still_held = self._held_buckets(client)
            if not isinstance(still_held, set):
                break           # an original receiver, or already committed
            pending = [i for i in range(len(plan.buckets)) if i not in still_held]
            if not pending:
                break
        self._early = early if early is not None and early.started else None

    def _finish(self, client: PeerClient, outgoing: Outgoing, context: RunContext) -> None:
        self.stats.set_phase("Commit")
        context.changed()
        if self._early is not None and self._early.wait(context.check):
            return
        # Never sent, or it failed: commit now (a committed transaction answers {}).
        run_with_retries(lambda: self._send_commit(client, wait=False),
                         self._services.retry_policy(), sleep=context.wait,
                         should_stop=context.check, on_retry=self.stats.retried)

    def _failed(self, client: PeerClient, error: TransfersError) -> None:
        """A receiver that refused the data will not take it later: forget the
        transaction. After a network failure it stays, for a resubmit to continue."""
        cause = last_error(error)
        refused = isinstance(cause, PeerHttpError) and cause.status is not None \
            and 400 <= cause.status < 500 and cause.status != 404
        if refused:
            if self._path:
                with contextlib.suppress(PeerError):
                    client.send("DELETE", self._path, headers=self._headers)
            self.discard()

    # -- preparing --------------------------------------------------------------------

    def _plan(self) -> PushPlan:
        self.stats.set_phase("Lookup")
        source = self._services.source
        instances = source.describe_all(source.expand(self.query.resources))
        buckets = plan_buckets(instances, self._services.config.bucket_size,
                               compression=self.query.compression)
        self.stats.planned(len(instances), sum(info.size for info in instances))
        deadline = self._services.config.outage_deadline_of(self.query.outage_deadline)
        return PushPlan(tuple(instances), tuple(buckets), self.query.compression,
                        self.query.import_during_transfer, deadline)

    def _open_transaction(self, client: PeerClient, plan: PushPlan,
                          context: RunContext) -> set[int] | None:
        """Reuse the transaction of a previous attempt, or create one.

        Returns the buckets the receiver holds, or None if it already committed them.
        """
        signature = plan_signature(plan.instances, plan.buckets)
        self._headers = {"sender-transfer-id": self.query.sender_transfer_id or self.job_id}
        saved = self._load_state()
        if saved.get("Signature") == signature:
            self._path = saved["Path"]
            if saved.get("Cookie"):
                self._headers["Cookie"] = saved["Cookie"]
            held = self._held_buckets(client)
            if held == "committed":
                return None
            if isinstance(held, set):
                return held
        self._create(client, plan, context)
        self._save_state(signature)
        return set()

    def _create(self, client: PeerClient, plan: PushPlan, context: RunContext) -> None:
        self.stats.set_phase("Create")
        body = json.dumps(plan.to_wire()).encode()
        headers = {**self._headers, "Content-Type": "application/json"}
        started = time.perf_counter()
        deadline = time.monotonic() + self._services.config.peer_commit_timeout
        answer = run_with_retries(lambda: self._post_creation(client, body, headers, deadline,
                                                              context),
                                  self._services.retry_policy(), sleep=context.wait,
                                  should_stop=context.check, on_retry=self.stats.retried)
        # The receiver's own time (staging folders) is not the round trip's.
        elapsed = time.perf_counter() - started
        self._in_flight.observe_rtt(max(0.0, elapsed - _server_seconds(answer)))
        uri = "/transfers/push"
        created = require_fields(answer.json(client.peer.name, uri), {"Path": str},
                                 peer=client.peer.name, uri=uri, what="push creation answer")
        self._path = created["Path"]
        self._peer_encodings = peer_encodings(created)
        if answer.cookies:
            self._headers["Cookie"] = answer.cookies

    def _post_creation(self, client: PeerClient, body: bytes, headers: dict[str, str],
                       deadline: float, context: RunContext) -> PeerAnswer:
        """503: every push slot of the receiver is busy; wait for one until ``deadline``
        (PeerCommitTimeout after the first attempt)."""
        timeout = self._services.config.peer_commit_timeout
        while True:
            try:
                return client.send("POST", "/transfers/push", body=body, headers=headers,
                                   timeout=timeout)
            except PeerHttpError as e:
                if e.status != 503 or time.monotonic() > deadline:
                    raise
                self.stats.set_phase("WaitingForReceiver")
                context.wait(1.0)

    def _held_buckets(self, client: PeerClient) -> set[int] | str | None:
        """Ask a receiver running this plugin which buckets it holds (None: cannot tell)."""
        try:
            status = client.send("GET", self._path, headers=self._headers, expect_ok=False)
            value = status.json(client.peer.name, self._path) if status.status == 200 else None
        except PeerError:
            return None
        if not isinstance(value, dict):
            return None
        if value.get("Committed") is True:
            return "committed"
        self._peer_encodings = peer_encodings(value)
        received = value.get("ReceivedBuckets")
        if not isinstance(received, list):
            return None
        return {i for i in received if isinstance(i, int)}

    # -- moving -----------------------------------------------------------------------

    def _upload(self, client: PeerClient, plan: PushPlan, context: RunContext) -> BucketUpload:
        services = self._services
        return BucketUpload(
            client=client, plan=plan, path=self._path,
            headers={**self._headers, "Content-Type": "application/octet-stream"},
            chooser=self._chooser(plan.compression), policy=services.retry_policy(),
            stats=self.stats, in_flight=self._in_flight, context=context,
            read=self._bucket_bytes, encoders=services.throttles.encoders,
            on_sent=self._sent)

    def _sent(self, wire_bytes: int) -> None:
        self._services.metrics.add("push_sent_bytes", wire_bytes)
        self._services.publish_cache_metrics()

    def _bucket_bytes(self, bucket: Bucket) -> bytes:
        source = self._services.source
        parts = [source.read_range((chunk.instance_id,), chunk.offset, chunk.size)
                 for chunk in bucket.chunks]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- finishing --------------------------------------------------------------------

    def _send_commit(self, client: PeerClient, *, wait: bool) -> None:
        timeout = self._services.config.peer_commit_timeout
        headers = self._headers
        if wait:     # as long as a bucket request may take, at most
            seconds = self._services.config.http_timeout or MAX_COMMIT_WAIT
            headers = {**headers, COMMIT_WAIT_HEADER: f"{seconds:g}"}
            timeout = timeout + seconds if timeout else 0
        client.send("POST", f"{self._path}/commit", body=b"", headers=headers,
                    timeout=timeout)

    # -- state kept in the job's staging folder ---------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            value = json.loads((self.directory / STATE_FILE).read_text())
            return value if isinstance(value, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self, signature: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / STATE_FILE).write_text(json.dumps(
            {"Signature": signature, "Path": self._path,
             "Cookie": self._headers.get("Cookie", "")}))


@dataclass
class BucketUpload:
    """The per-bucket step of one push attempt, run by the attempt's pool threads."""

    client: PeerClient
    plan: PushPlan
    path: str
    headers: dict[str, str]
    chooser: EncodingChooser
    policy: RetryPolicy
    stats: TransferStats
    in_flight: InFlight
    context: RunContext
    read: Callable[[Bucket], bytes]
    encoders: threading.BoundedSemaphore
    on_sent: Callable[[int], None]
    #: Set when the receiver forgot a corrupted instance: its buckets go in the next round.
    dropped: threading.Event = field(default_factory=threading.Event)

    def put(self, index: int) -> list[int]:
        data = self.read(self.plan.buckets[index])
        encoding, level = self.chooser.choose(data)
        started = time.thread_time()      # CPU time: a wait for a free core is not speed
        with self.encoders:
            payload = encode(data, encoding, level)
        self.chooser.observe_encoding(encoding, level, len(data), len(payload),
                                      time.thread_time() - started)
        headers = {**self.headers, ENCODING_HEADER: encoding.value} \
            if self.chooser.adaptive else self.headers
        began = time.perf_counter()
        try:
            run_with_retries(lambda: self._attempt(index, payload, headers, began, encoding,
                                                   len(data)),
                             self.policy, sleep=self.context.wait,
                             should_stop=self.context.check, on_retry=self.stats.retried)
        except RetriesExhausted as e:
            if not isinstance(e.last, PeerCorruption):
                raise
            self.dropped.set()
            return []
        self.stats.bucket_done(len(payload), self.plan.buckets[index].size, encoding.value)
        self.on_sent(len(payload))
        self.context.changed()
        return []

    def _attempt(self, index: int, payload: bytes, headers: dict[str, str], began: float,
                 encoding: Encoding, size: int) -> None:
        started = time.perf_counter()
        answer = self.client.send("PUT", f"{self.path}/{index}", body=payload,
                                  headers=headers, stop=self.context.check)
        seconds = time.perf_counter() - started
        self.chooser.observe_network(len(payload), seconds - _server_seconds(answer))
        self.chooser.observe_bucket(encoding, size, time.perf_counter() - began)
        self.in_flight.observe_request(seconds)


def _server_seconds(answer: HttpAnswer) -> float:
    """The receiver's own time on a bucket (receivers of ours say it), not the link's."""
    try:
        return max(0.0, float(answer.headers.get(SERVER_SECONDS_HEADER, 0.0)))
    except ValueError:
        return 0.0
