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
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .buckets import Bucket, PushPlan, plan_buckets, slices_first
from .chooser import EncodingChooser
from .encoding import ENCODING_HEADER, SERVER_SECONDS_HEADER, encode
from .errors import (
    PeerCorruption,
    PeerError,
    PeerHttpError,
    PeerProtocolError,
    RetriesExhausted,
    TransfersError,
)
from .httpclient import HttpAnswer
from .jobs import RunContext
from .peers import PeerClient
from .protocol import COMMIT_WAIT_HEADER, MAX_COMMIT_WAIT
from .retry import run_with_retries
from .services import Services
from .staging import plan_signature
from .transfer import TransferStats, TransferWork, failure_reason, transfer_content
from .workers import run_parallel

PUSH_JOB_TYPE = "PushTransfer"
STATE_FILE = "push.json"
#: Rounds of "which buckets are missing?" before commit (our receivers only).
COMPLETION_ROUNDS = 3


class EarlyCommit:
    """A commit sent while the last buckets are still on the wire, on its own thread."""

    def __init__(self, send: Callable[[], object]) -> None:
        self._send = send
        self._thread = threading.Thread(target=self._run, name="TF-PUSH-COMMIT", daemon=True)
        self._done = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def _run(self) -> None:
        try:
            self._send()
        except BaseException as e:
            self.error = e
        finally:
            self._done.set()

    def succeeded(self, check: Callable[[], None]) -> bool:
        """Wait for the answer (a pause or cancel stops waiting); False if never sent."""
        if not self.started:
            return False
        while not self._done.wait(0.1):
            check()
        return self.error is None


class PushWork(TransferWork):
    kind = "send"

    def __init__(self, services: Services, job_id: str, request: dict[str, Any]) -> None:
        super().__init__(services, job_id, request)
        self._headers: dict[str, str] = {}
        self._path = ""

    # -- Work protocol ----------------------------------------------------------------

    def content(self) -> dict[str, Any]:
        content = transfer_content(self.query, self.stats, self.failure, "Uploaded")
        if self._path:
            content["RemoteTransaction"] = self._path
        if self.query.import_during_transfer is not None:      # else the receiver decides
            content["ImportDuringTransfer"] = self.query.import_during_transfer
        return content

    def run(self, context: RunContext) -> None:
        self.failure = None
        self.stats = TransferStats()
        client: PeerClient | None = None
        try:
            client = self._services.client(self.query.peer)
            plan = self._plan()
            self._services.prefetch_first(plan.instances)
            held = self._open_transaction(client, plan, context)
            if held is not None:
                early = self._send(client, plan, held, context)
                self._commit(client, context, early)
        except TransfersError as e:
            self.failure = failure_reason(e, self.query.peer)
            if client is not None and self._receiver_refused(e):
                self._abandon(client)
            raise
        self.stats.phase = "Done"
        self.discard()

    # -- phases -----------------------------------------------------------------------

    def _plan(self) -> PushPlan:
        self.stats.phase = "Lookup"
        source = self._services.source
        instances = source.describe_all(source.expand(self.query.resources))
        buckets = plan_buckets(instances, self._services.config.bucket_size,
                               compression=self.query.compression)
        self.stats.total_instances = len(instances)
        self.stats.total_size = sum(info.size for info in instances)
        return PushPlan(tuple(instances), tuple(buckets), self.query.compression,
                        self.query.import_during_transfer)

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
        self.stats.phase = "Create"
        body = json.dumps(plan.to_wire()).encode()
        deadline = time.monotonic() + self._services.config.peer_commit_timeout
        headers = {**self._headers, "Content-Type": "application/json"}
        timeout = self._services.config.peer_commit_timeout

        def attempt() -> Any:
            while True:   # 503: every push slot of the receiver is busy; wait for one
                try:
                    return client.send("POST", "/transfers/push", body=body, headers=headers,
                                       timeout=timeout)
                except PeerHttpError as e:
                    if e.status != 503 or time.monotonic() > deadline:
                        raise
                    self.stats.phase = "WaitingForReceiver"
                    context.wait(1.0)

        started = time.perf_counter()
        answer = run_with_retries(attempt, self._services.retry_policy(),
                                  sleep=context.wait, should_stop=context.check)
        # The receiver's own time (staging folders) is not the round trip's.
        elapsed = time.perf_counter() - started
        self._in_flight.observe_rtt(max(0.0, elapsed - _server_seconds(answer)))
        created = answer.json(client.peer.name, "/transfers/push")
        if not isinstance(created, dict) or not isinstance(created.get("Path"), str):
            raise PeerProtocolError(f"Bad network protocol from peer {client.peer.name}: "
                                    "push creation answer without Path",
                                    peer=client.peer.name, uri="/transfers/push")
        self._path = created["Path"]
        self._peer_encodings = _encodings(created)
        if answer.cookies:
            self._headers["Cookie"] = answer.cookies

    def _held_buckets(self, client: PeerClient) -> set[int] | str | None:
        """Ask a receiver running this plugin which buckets it holds (None: cannot tell)."""
        try:
            status = client.send("GET", self._path, headers=self._headers, expect_ok=False)
        except PeerError:
            return None
        if status.status != 200:
            return None
        try:
            value = status.json(client.peer.name, self._path)
        except PeerProtocolError:
            return None
        if not isinstance(value, dict):
            return None
        if value.get("Committed") is True:
            return "committed"
        self._peer_encodings = _encodings(value)
        received = value.get("ReceivedBuckets")
        if not isinstance(received, list):
            return None
        return {i for i in received if isinstance(i, int)}

    def _send(self, client: PeerClient, plan: PushPlan, held: set[int],
              context: RunContext) -> EarlyCommit | None:
        """PUT what the receiver lacks; a receiver of ours is sent the commit early."""
        stats = self.stats
        stats.phase = "Transfer"
        stats.started = stats.last_query = time.monotonic()
        stats.done_bytes = sum(plan.buckets[i].size for i in held if i < len(plan.buckets))
        stats.total_buckets = len(plan.buckets)
        stats.reused_buckets = len(held)
        policy = self._services.retry_policy()
        headers = {**self._headers, "Content-Type": "application/octet-stream"}

        config = self._services.config
        chooser = EncodingChooser(plan.compression.value, self._peer_encodings,
                                  gzip_level=config.gzip_level, threads=config.threads,
                                  cores=os.cpu_count() or 1, rtt=self._in_flight.rtt)

        dropped = threading.Event()

        def put(index: int) -> list[int]:
            data = self._bucket_bytes(plan.buckets[index])
            encoding, level = chooser.choose(data)
            began = time.perf_counter()
            started = time.thread_time()      # CPU time: a wait for a free core is not speed
            payload = encode(data, encoding, level)
            chooser.observe_encoding(encoding, level, len(data), len(payload),
                                     time.thread_time() - started)
            put_headers = {**headers, ENCODING_HEADER: encoding.value} if chooser.adaptive \
                else headers

            def attempt() -> None:
                started = time.perf_counter()
                answer = client.send("PUT", f"{self._path}/{index}", body=payload,
                                     headers=put_headers, stop=context.check)
                seconds = time.perf_counter() - started
                chooser.observe_network(len(payload), seconds - _server_seconds(answer))
                chooser.observe_bucket(encoding, len(data), time.perf_counter() - began)
                self._in_flight.observe_request(seconds)

            try:
                run_with_retries(attempt, policy, sleep=context.wait,
                                 should_stop=context.check, on_retry=stats.retried)
            except RetriesExhausted as e:
                if not isinstance(e.last, PeerCorruption):
                    raise
                dropped.set()  # the receiver forgot a corrupted instance: resent next round
                return []
            stats.bucket_done(len(payload), plan.buckets[index].size, encoding.value)
            self._services.metrics.add("push_sent_bytes", len(payload))
            self._services.publish_cache_metrics()
            context.changed()
            return []

        early = EarlyCommit(lambda: self._send_commit(client, wait=True)) \
            if self._peer_encodings else None
        pending = slices_first(plan.buckets, (i for i in range(len(plan.buckets))
                                              if i not in held))
        for _ in range(COMPLETION_ROUNDS):
            dropped.clear()
            run_parallel(pending, put, self._in_flight, context.check, "TF-PUSH",
                         on_drained=early.start if early and not early.started else None)
            if not dropped.is_set():
                break           # every PUT was accepted: no round trip to ask what is held
            still_held = self._held_buckets(client)
            if not isinstance(still_held, set):
                break           # an original receiver, or already committed
            pending = [i for i in range(len(plan.buckets)) if i not in still_held]
            if not pending:
                break
        return early if early is not None and early.started else None

    def _bucket_bytes(self, bucket: Bucket) -> bytes:
        source = self._services.source
        parts = [source.read_range((chunk.instance_id,), chunk.offset, chunk.size)
                 for chunk in bucket.chunks]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _commit(self, client: PeerClient, context: RunContext,
                early: EarlyCommit | None) -> None:
        self.stats.phase = "Commit"
        context.changed()
        if early is not None and early.succeeded(context.check):
            return
        # Never sent, or it failed: commit now (a committed transaction answers {}).
        run_with_retries(lambda: self._send_commit(client, wait=False),
                         self._services.retry_policy(), sleep=context.wait,
                         should_stop=context.check)

    def _send_commit(self, client: PeerClient, *, wait: bool) -> None:
        timeout = self._services.config.peer_commit_timeout
        headers = self._headers
        if wait:     # as long as a bucket request may take, at most
            seconds = self._services.config.http_timeout or MAX_COMMIT_WAIT
            headers = {**headers, COMMIT_WAIT_HEADER: f"{seconds:g}"}
            timeout = timeout + seconds if timeout else 0
        client.send("POST", f"{self._path}/commit", body=b"", headers=headers,
                    timeout=timeout)

    # -- failure handling and state ---------------------------------------------------

    @staticmethod
    def _receiver_refused(error: TransfersError) -> bool:
        cause = error.last if isinstance(error, RetriesExhausted) else error
        return isinstance(cause, PeerHttpError) and cause.status is not None \
            and 400 <= cause.status < 500 and cause.status != 404

    def _abandon(self, client: PeerClient) -> None:
        if self._path:
            with contextlib.suppress(PeerError):
                client.send("DELETE", self._path, headers=self._headers)
        self.discard()

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


def _encodings(answer: dict[str, Any]) -> frozenset[str]:
    """What a receiver of ours decodes (absent from original receivers: no adapting)."""
    value = answer.get("Encodings")
    if not isinstance(value, list):
        return frozenset()
    return frozenset(e for e in value if isinstance(e, str))


def _server_seconds(answer: HttpAnswer) -> float:
    """The receiver's own time on a bucket (receivers of ours say it), not the link's."""
    try:
        return max(0.0, float(answer.headers.get(SERVER_SECONDS_HEADER, 0.0)))
    except ValueError:
        return 0.0
