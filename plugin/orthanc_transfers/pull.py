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

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from .buckets import Bucket, plan_buckets, slices_first
from .chooser import EncodingChooser
from .commit import ImportStream, import_area
from .encoding import (
    ADAPTIVE_HEADER,
    ENCODE_SECONDS_HEADER,
    ENCODING_HEADER,
    SERVER_SECONDS_HEADER,
    Encoding,
    decode,
)
from .errors import (
    IntegrityError,
    PeerProtocolError,
    StagingError,
    TransfersError,
)
from .jobs import RunContext
from .peers import PeerClient
from .protocol import InstanceInfo
from .retry import run_with_retries
from .staging import DownloadArea
from .transfer import TransferStats, TransferWork, failure_reason, transfer_content
from .workers import run_parallel

PULL_JOB_TYPE = "PullTransfer"
#: How many times one instance may fail its MD5 check before the job fails.
MAX_MD5_FAILURES = 3


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


class PullWork(TransferWork):
    kind = "pull"

    # -- Work protocol ----------------------------------------------------------------

    def content(self) -> dict[str, Any]:
        content = transfer_content(self.query, self.stats, self.failure, "Downloaded")
        content["SkippedInstances"] = self.stats.skipped_instances
        content["SkipStoredInstances"] = self._skip_stored()
        content["ImportDuringTransfer"] = self._import_during_transfer()
        if self.query.originator is not None:
            content["Originator"] = self.query.originator
        return content

    def run(self, context: RunContext) -> None:
        self.failure = None
        self.stats = TransferStats()
        try:
            client = self._services.client(self.query.peer)
            area = self._prepare(client, context)
            stream = self._import_stream(area, context)
            try:
                self._download(client, area, context, stream)
                if stream is not None:
                    stream.finish()
            except BaseException:
                if stream is not None:
                    stream.abort()
                raise
            self._import(area, context, stream.imported if stream is not None else set())
        except TransfersError as e:
            self.failure = failure_reason(e, self.query.peer)
            raise
        self.stats.phase = "Done"
        self.discard()

    # -- phases -----------------------------------------------------------------------

    def _lookup(self, client: PeerClient, context: RunContext) -> list[InstanceInfo]:
        self.stats.phase = "Lookup"
        headers = {"sender-transfer-id": self.query.sender_transfer_id or self.job_id}
        body = [resource.to_wire() for resource in self.query.resources]
        started = time.perf_counter()
        answer = run_with_retries(
            lambda: client.post_json("/transfers/lookup", body, headers=headers),
            self._services.retry_policy(), sleep=context.wait, should_stop=context.check)
        self._in_flight.observe_rtt(time.perf_counter() - started)
        if not isinstance(answer, dict) or not isinstance(answer.get("Instances"), list) \
                or not isinstance(answer.get("Originator"), str):
            raise PeerProtocolError(f"Bad network protocol from peer {self.query.peer}: "
                                    "lookup answer without Instances and Originator",
                                    peer=self.query.peer, uri="/transfers/lookup")
        if self.query.originator is not None and answer["Originator"] != self.query.originator:
            raise PeerProtocolError(
                f"Invalid originator, check out the RemoteSelf configuration option of peer "
                f"{self.query.peer}", peer=self.query.peer, uri="/transfers/lookup")
        try:
            instances = [InstanceInfo.from_wire(item) for item in answer["Instances"]]
        except TransfersError as e:
            raise PeerProtocolError(f"Bad lookup answer from peer {self.query.peer}: "
                                    f"{e.message}", peer=self.query.peer,
                                    uri="/transfers/lookup") from e
        encodings = answer.get("Encodings")          # only sources of ours say it
        self._peer_encodings = frozenset(e for e in encodings if isinstance(e, str)) \
            if isinstance(encodings, list) else frozenset()
        return instances

    def _prepare(self, client: PeerClient, context: RunContext) -> DownloadArea:
        remote = self._lookup(client, context)
        stats = self.stats
        stats.total_instances = len(remote)
        stats.total_size = sum(info.size for info in remote)
        limit = self._services.config.max_instance_size
        for info in remote:
            if info.size > limit:
                raise PeerProtocolError(f"Instance {info.id} of {info.size} bytes exceeds "
                                        "Transfers.MaxInstanceSize", peer=self.query.peer)
        saved = DownloadArea.saved_plan(self.directory)
        known = {info.id: info for info in remote}
        if saved is not None and all(known.get(i.id) == i for i in saved[0]):
            todo, buckets = saved
        else:
            self.discard()
            skip = self._skip_stored()
            todo = [info for info in remote
                    if not (skip and self._services.stored_md5(info.id) == info.md5)]
            buckets = plan_buckets(todo, self._services.config.bucket_size,
                                   compression=self.query.compression, base_url=client.peer.url)
        stats.skipped_instances = len(remote) - len(todo)
        self._check_space(todo)
        area = DownloadArea(self.directory, todo, buckets)
        stats.total_buckets = len(buckets)
        stats.reused_buckets = len(buckets) - len(area.pending_buckets())
        stats.done_bytes = area.done_bytes() + sum(i.size for i in remote) \
            - sum(i.size for i in todo)
        context.changed()
        return area

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

    def _import_during_transfer(self) -> bool:
        return self._services.config.imports_during_transfer(self.query.import_during_transfer)

    def _import_stream(self, area: DownloadArea, context: RunContext) -> ImportStream | None:
        if not self._import_during_transfer():
            return None
        self.stats.to_import = len(area.instances)
        stream = ImportStream(self._services, area, check=context.check,
                              on_imported=lambda _: self._imported(context))
        for instance_id in sorted(area.verified):       # staged by an earlier attempt
            stream.submit(instance_id)
        return stream

    def _imported(self, context: RunContext) -> None:
        with self.stats.lock:
            self.stats.imported += 1
        context.changed()

    def _download(self, client: PeerClient, area: DownloadArea, context: RunContext,
                  stream: ImportStream | None) -> None:
        stats = self.stats
        stats.phase = "Transfer"
        stats.started = stats.last_query = time.monotonic()
        config = self._services.config
        chooser = EncodingChooser(self.query.compression.value, self._peer_encodings,
                                  gzip_level=config.gzip_level, threads=config.threads,
                                  cores=os.cpu_count() or 1, rtt=self._in_flight.rtt)
        policy = self._services.retry_policy()
        md5_failures: dict[str, int] = {}
        metrics = self._services.metrics

        def fetch(index: int) -> list[int]:
            if stream is not None:
                stream.raise_if_failed()
            if area.is_done(index):
                return []
            bucket = area.buckets[index]

            def attempt() -> tuple[Encoding, int, bytes]:
                started = time.perf_counter()
                result = fetch_bucket(client, bucket, chooser, context.check)
                self._in_flight.observe_request(time.perf_counter() - started)
                return result

            encoding, network, data = run_with_retries(attempt, policy, sleep=context.wait,
                                                       should_stop=context.check,
                                                       on_retry=stats.retried)
            completed = area.write_bucket(index, data)
            stats.bucket_done(network, len(data), encoding.value)
            metrics.add("pull_received_bytes", network)
            again: list[int] = []
            for instance_id in completed:
                try:
                    area.verify(instance_id)
                except IntegrityError:
                    metrics.add("corrupted_instances_count")
                    md5_failures[instance_id] = md5_failures.get(instance_id, 0) + 1
                    if md5_failures[instance_id] >= MAX_MD5_FAILURES:
                        raise
                    again.extend(area.buckets_of(instance_id))
                    continue
                if stream is not None:
                    stream.submit(instance_id)
            context.changed()
            return again

        try:
            run_parallel(slices_first(area.buckets, area.pending_buckets()), fetch,
                         self._in_flight, context.check, "TF-PULL")
        finally:
            area.flush()

    def _import(self, area: DownloadArea, context: RunContext, imported: set[str]) -> None:
        self.stats.phase = "Import"
        self.stats.to_import = len(area.instances)
        import_area(self._services, area, check=context.check,
                    on_imported=lambda _: self._imported(context), imported=imported)
