"""The ``PullTransfer`` job: lookup on the source, download buckets, verify, import.

Sequence (reference §5.1, improved where §20 says): ``POST {source}/transfers/lookup``;
with ``SkipStoredInstances``, instances this Orthanc stores with the same MD5 are not
downloaded; buckets are planned (or the plan of an interrupted attempt is reused) and
fetched with ``GET /transfers/chunks/...`` on ``Threads`` threads, each with its own
retries and backoff; each instance is MD5-checked as soon as its last byte lands (a
mismatch fetches its buckets again); the import starts only when everything is verified,
or, with ``ImportDuringTransfer``, as soon as each instance is.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .buckets import Bucket, plan_buckets, slices_first
from .chooser import EncodingChooser
from .concurrency import InFlight, run_parallel
from .encoding import (
    ADAPTIVE_HEADER,
    ENCODE_SECONDS_HEADER,
    ENCODING_HEADER,
    SERVER_SECONDS_HEADER,
    Encoding,
    decode,
)
from .errors import (
    PeerProtocolError,
    RepeatedCorruption,
    StagingError,
    TransfersError,
)
from .importing import ImportStream, import_area
from .jobs import RunContext
from .metrics import Metrics
from .peers import PeerClient
from .protocol import InstanceInfo, peer_encodings, require_fields
from .retry import RetryPolicy, run_with_retries
from .services import Services
from .staging import DownloadArea
from .transfer_job import TransferStats, TransferWork

PULL_JOB_TYPE = "PullTransfer"


def fetch_bucket(client: PeerClient, bucket: Bucket, chooser: EncodingChooser,
                 stop: Callable[[], None]) -> tuple[Encoding, int, bytes]:
    """GET one bucket in the encoding the chooser picks; returns the encoding the source
    sent, the wire bytes and the data."""
    encoding, level = chooser.choose()
    headers = {ADAPTIVE_HEADER: "1"} if chooser.adaptive else {}
    with_level = chooser.adaptive and encoding is not Encoding.NONE
    uri = bucket.pull_uri(encoding, level if with_level else None)
    started = time.perf_counter()
    answer = client.send("GET", uri, headers=headers, stop=stop)
    elapsed = time.perf_counter() - started
    sent_as = answer.headers.get(ENCODING_HEADER, encoding.value) if chooser.adaptive \
        else encoding.value
    try:
        actual = Encoding(sent_as)
        encode_seconds = float(answer.headers.get(ENCODE_SECONDS_HEADER, 0.0))
        server_seconds = float(answer.headers.get(SERVER_SECONDS_HEADER, encode_seconds))
    except ValueError as e:
        raise PeerProtocolError(f"Bad {ENCODING_HEADER} from peer {client.peer.name}",
                                peer=client.peer.name, uri=uri) from e
    data = decode(answer.body, actual, bucket.size)
    chooser.observe_network(len(answer.body), elapsed - server_seconds)
    chooser.observe_bucket(actual, bucket.size, time.perf_counter() - started)
    chooser.observe_encoding(actual, level, bucket.size, len(answer.body), encode_seconds)
    return actual, len(answer.body), data


class PullWork(TransferWork[DownloadArea]):
    kind = "pull"

    def __init__(self, services: Services, job_id: str, request: dict[str, Any]) -> None:
        super().__init__(services, job_id, request)
        self._imported_early: set[str] = set()

    # -- Work protocol ----------------------------------------------------------------

    def content(self) -> dict[str, Any]:
        content = self._content("Downloaded")
        content["SkippedInstances"] = self.stats.skipped_instances
        content["SkipStoredInstances"] = self._skip_stored()
        content["ImportDuringTransfer"] = self._import_during_transfer()
        if self.query.originator is not None:
            content["Originator"] = self.query.originator
        return content

    # -- the steps of a transfer ------------------------------------------------------

    def _prepare(self, client: PeerClient, context: RunContext) -> DownloadArea:
        remote = self._lookup(client, context)
        limit = self._services.config.max_instance_size
        for info in remote:
            if info.size > limit:
                raise PeerProtocolError(f"Instance {info.id} of {info.size} bytes exceeds "
                                        "Transfers.MaxInstanceSize", peer=self.query.peer,
                                        uri="/transfers/lookup")
        todo, buckets = self._plan(client, remote)
        total_size = sum(info.size for info in remote)
        self.stats.planned(len(remote), total_size, skipped=len(remote) - len(todo))
        self._check_space(todo)
        area = DownloadArea(self.directory, todo, buckets)
        skipped_bytes = total_size - sum(info.size for info in todo)
        self.stats.transfer_starts(len(buckets), len(buckets) - area.count_pending(),
                                   area.done_bytes() + skipped_bytes)
        context.changed()
        return area

    def _move(self, client: PeerClient, area: DownloadArea, context: RunContext) -> None:
        """Download the buckets; with ImportDuringTransfer, import while downloading."""
        stream = self._import_stream(area, context)
        try:
            download = BucketDownload(
                client, area, self._chooser(self.query.compression),
                self._services.retry_policy(), self.stats, self._services.metrics,
                self._in_flight, context, stream)
            try:
                run_parallel(slices_first(area.buckets, area.pending_buckets()),
                             download.fetch, self._in_flight, context.check, "TF-PULL")
            finally:
                area.flush()
            if stream is not None:
                stream.finish()
        except BaseException:
            if stream is not None:
                stream.abort()
            raise
        self._imported_early = stream.imported if stream is not None else set()

    def _finish(self, client: PeerClient, area: DownloadArea, context: RunContext) -> None:
        self.stats.set_phase("Import")
        self.stats.import_starts(len(area.instances))
        import_area(self._services, area, check=context.check,
                    on_imported=lambda _: self._imported(context),
                    imported=self._imported_early)

    # -- preparing --------------------------------------------------------------------

    def _lookup(self, client: PeerClient, context: RunContext) -> list[InstanceInfo]:
        self.stats.set_phase("Lookup")
        headers = {"sender-transfer-id": self.query.sender_transfer_id or self.job_id}
        body = [resource.to_wire() for resource in self.query.resources]
        uri, peer = "/transfers/lookup", self.query.peer
        started = time.perf_counter()
        answer = run_with_retries(
            lambda: client.post_json(uri, body, headers=headers),
            self._services.retry_policy(), sleep=context.wait, should_stop=context.check,
            on_retry=self.stats.retried)
        self._in_flight.observe_rtt(time.perf_counter() - started)
        answer = require_fields(answer, {"Instances": list, "Originator": str}, peer=peer,
                                uri=uri, what="lookup answer")
        if self.query.originator is not None and answer["Originator"] != self.query.originator:
            raise PeerProtocolError(
                f"Invalid originator, check out the RemoteSelf configuration option of peer "
                f"{peer}", peer=peer, uri=uri)
        try:
            instances = [InstanceInfo.from_wire(item) for item in answer["Instances"]]
        except TransfersError as e:
            raise PeerProtocolError(f"Bad lookup answer from peer {peer}: {e.message}",
                                    peer=peer, uri=uri) from e
        self._peer_encodings = peer_encodings(answer)
        return instances

    def _plan(self, client: PeerClient, remote: list[InstanceInfo]
              ) -> tuple[list[InstanceInfo], list[Bucket]]:
        """The plan of an interrupted attempt if the source still has the same instances,
        else a new one (without what this Orthanc stores, with SkipStoredInstances)."""
        saved = DownloadArea.saved_plan(self.directory)
        known = {info.id: info for info in remote}
        if saved is not None and all(known.get(i.id) == i for i in saved[0]):
            return saved
        self.discard()
        skip = self._skip_stored()
        todo = [info for info in remote
                if not (skip and self._services.stored_md5(info.id) == info.md5)]
        return todo, plan_buckets(todo, self._services.config.bucket_size,
                                  compression=self.query.compression, base_url=client.peer.url)

    def _check_space(self, todo: list[InstanceInfo]) -> None:
        """Fail at once, and clearly, when the staging disk cannot hold the transfer."""
        root = self._services.staging_root
        root.mkdir(parents=True, exist_ok=True)
        staged = sum(f.stat().st_blocks * 512 for f in self.directory.glob("*.dcm")) \
            if self.directory.is_dir() else 0
        needed = sum(info.size for info in todo) - staged
        free = shutil.disk_usage(root).free
        if needed > free:
            raise StagingError(f"Not enough space in the staging directory {root}: "
                               f"{needed} bytes needed, {free} free")

    def _skip_stored(self) -> bool:
        """Not downloading what this Orthanc stores with the same MD5 (SkipStoredInstances).
        Off by default, as in the original: every requested instance is transferred."""
        return self._services.config.skips_stored_instances(self.query.skip_stored_instances)

    # -- importing --------------------------------------------------------------------

    def _import_during_transfer(self) -> bool:
        return self._services.config.imports_during_transfer(self.query.import_during_transfer)

    def _import_stream(self, area: DownloadArea, context: RunContext) -> ImportStream | None:
        if not self._import_during_transfer():
            return None
        self.stats.import_starts(len(area.instances))
        stream = ImportStream(self._services, area, check=context.check,
                              on_imported=lambda _: self._imported(context))
        for instance_id in sorted(area.verified):       # staged by an earlier attempt
            stream.submit(instance_id)
        return stream

    def _imported(self, context: RunContext) -> None:
        self.stats.imported_one()
        context.changed()


@dataclass
class BucketDownload:
    """The per-bucket step of one pull attempt, run by the attempt's pool threads."""

    client: PeerClient
    area: DownloadArea
    chooser: EncodingChooser
    policy: RetryPolicy
    stats: TransferStats
    metrics: Metrics
    in_flight: InFlight
    context: RunContext
    stream: ImportStream | None

    def fetch(self, index: int) -> list[int]:
        """Download, decode and accept bucket ``index``; returns the buckets to fetch
        again (those of an instance whose MD5 failed)."""
        if self.stream is not None:
            self.stream.raise_if_failed()
        if self.area.is_done(index):
            return []
        bucket = self.area.buckets[index]
        encoding, network, data = run_with_retries(
            lambda: self._attempt(bucket), self.policy, sleep=self.context.wait,
            should_stop=self.context.check, on_retry=self.stats.retried)
        try:
            accepted = self.area.accept(index, data)
        except RepeatedCorruption:
            self.metrics.add("corrupted_instances_count")
            raise
        self.stats.bucket_done(network, len(data), encoding.value)
        self.metrics.add("pull_received_bytes", network)
        if accepted.corrupted:
            self.metrics.add("corrupted_instances_count", len(accepted.corrupted))
        for instance_id in accepted.verified:
            if self.stream is not None:
                self.stream.submit(instance_id)
        self.context.changed()
        return accepted.again

    def _attempt(self, bucket: Bucket) -> tuple[Encoding, int, bytes]:
        started = time.perf_counter()
        result = fetch_bucket(self.client, bucket, self.chooser, self.context.check)
        self.in_flight.observe_request(time.perf_counter() - started)
        return result
