"""Transfers that finish unattended (issue 17), on real servers with the plugin's
DEFAULT settings: an empty ``Transfers`` section (the harness's own ``MaxHttpRetries`` 2
and ``HttpRetryBackoff`` 0.2 are dropped), so every request is retried 5 times (pauses of
about 1, 2, 4, 8, 16 s) and a peer that stays away longer is waited for, up to the
default ``OutageDeadline`` of 6 hours.

* a link that resets a connection every 2 to 4 MB, push and pull;
* the peer's Orthanc stopped for 90 s mid-transfer (the receiver of a push, the source
  of a pull), then started again on the same port with the same storage;
* the link cut for 90 s (every connection reset, new ones refused), then restored;
* an outage longer than the job's own ``OutageDeadline``: the job fails and says why,
  then a resubmit finishes it;
* a pause and a cancel while a job waits for its peer.

Each outage test runs its push and its pull side by side (one pair of servers each,
faulted at the same moment), so that the 90 s outages are waited for once. Each ends
byte-identical (MD5 of every instance on both sides), and checks that what was verified
before the outage was not sent again.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from devkit import dicom_data
from devkit.orthanc_server import OrthancServer, WaitTimeout, resources, wait_for
from devkit.wan_proxy import LinkProfile, WanProxy

MODES = ("push", "pull")
#: The plugin's defaults that the assertions below rely on.
THREADS = 4
IN_FLIGHT_MAX = 2 * THREADS       # InFlight: Threads requests, up to twice on long links
MAX_HTTP_RETRIES = 5
RETRY_PAUSES = (1, 2, 4, 8, 16)   # HttpRetryBackoff 1 s, doubling; jitter of ±25 %
DEFAULT_DEADLINE = 21600          # OutageDeadline, seconds
LONGEST_PROBE_PAUSE = 60 * 1.25   # probes 5, 10, 20, 40, then 60 s apart (±25 %)
#: A request's retries end between these (seconds after the peer went away).
RETRIES_SHORTEST = sum(RETRY_PAUSES) * 0.75
RETRIES_LONGEST = sum(RETRY_PAUSES) * 1.25
#: How long the peer or the link stays down (the issue's figure).
OUTAGE = 90.0
#: Buckets to be done before the fault, so that the outage falls mid-transfer.
DONE_BEFORE_FAULT = 3

#: About 12 s for the study with plain buckets: the outage falls mid-transfer.
LINK = LinkProfile("outage-link", delay=0.005, bandwidth=40e6)
#: Resets whichever connection carries the link past every 2 to 4 MB.
RESETTING = LinkProfile("resetting", delay=0.005, bandwidth=20e6,
                        reset_every=(2_000_000, 4_000_000))


@pytest.fixture(scope="module")
def big_study() -> list[bytes]:
    """30 CT slices (~0.5 MiB: grouped, 5 buckets) and a 40 MiB multi-frame instance
    (ten times the default BucketSize of 4 MiB: split into 10 buckets): ~55 MiB."""
    return dicom_data.mixed_study(ct_slices=30, multiframe_mb=40.0, seed=17)


# -- helpers ------------------------------------------------------------------------------


def default_cluster(make_cluster: Any, names: list[str]) -> list[OrthancServer]:
    """Servers whose ``Transfers`` section is empty: every option at the plugin's default
    (``per_server`` replaces the harness's section instead of merging into it)."""
    servers: list[OrthancServer] = make_cluster(
        names, per_server={name: {"Transfers": {}} for name in names})
    for server in servers:
        assert server.config["Transfers"] == {}, server.config
    return servers


def iso_time(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} has no time zone"
    return moment


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def poll(check: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy. Unlike ``wait_for`` its
    assertion errors are not retried: a job that fails while polled fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Transfer:
    """One transfer job between its own two servers, over a proxy in front of the job
    owner's peer, and what the test saw of it around a fault."""

    mode: str
    source: OrthancServer
    destination: OrthancServer
    link: WanProxy
    files: list[bytes]
    study: str
    job_id: str = ""
    #: Content just before the fault, and when the fault began (monotonic and wall clock)
    before: dict[str, Any] = field(default_factory=dict)
    faulted_at: float = 0.0
    faulted_wall: datetime.datetime = field(default_factory=utc_now)
    #: first ``Waiting`` seen, and when; the phases seen while the peer was away
    waiting: dict[str, Any] = field(default_factory=dict)
    waiting_seen_at: float = 0.0
    phases: set[str] = field(default_factory=set)
    kind: str = ""                 # the fault: "stop" or "cut"
    #: pull: chunks the source had served when the fault began (read just before a
    #: stop; read during a cut, when no request reaches it: exact)
    served_before: float = 0.0
    healed_at: float = 0.0

    @classmethod
    def prepare(cls, make_cluster: Any, make_proxy: Any, files: list[bytes], mode: str,
                profile: LinkProfile = LINK) -> Transfer:
        """Two servers of default settings, ``files`` on the source, and the job owner's
        peer reached through a proxy of ``profile``."""
        source, destination = default_cluster(make_cluster, [f"{mode}-src", f"{mode}-dst"])
        ids = source.upload(files)
        study = source.get_json(f"/instances/{ids[0]}/study")["ID"]
        owner, peer = (destination, source) if mode == "pull" else (source, destination)
        link = make_proxy(peer, profile)
        owner.request("PUT", f"/peers/{peer.name}", json={"Url": link.url}).raise_for_status()
        return cls(mode, source, destination, link, files, study)

    def begin(self, compression: str = "none", **body: Any) -> Transfer:
        """Start the job (``body``: more fields of the request, e.g. OutageDeadline)."""
        route = "/transfers/pull" if self.mode == "pull" else "/transfers/send"
        response = self.owner.post(route, json={
            "Resources": resources("Study", self.study), "Peer": self.peer.name,
            "Compression": compression, **body})
        assert response.status_code == 200, response.text
        self.job_id = response.json()["ID"]
        return self

    @property
    def owner(self) -> OrthancServer:
        """The server that runs the job."""
        return self.destination if self.mode == "pull" else self.source

    @property
    def peer(self) -> OrthancServer:
        """The server the job talks to (through ``link``)."""
        return self.source if self.mode == "pull" else self.destination

    def job(self) -> dict[str, Any]:
        job: dict[str, Any] = self.owner.get_json(f"/jobs/{self.job_id}")
        return job

    def served(self) -> float:
        """Pull: chunk requests the source answered since it (re)started."""
        return self.source.metric("orthanc_transfers_chunks_served_count")

    def owner_metric(self, name: str) -> float:
        return self.owner.metric(f"orthanc_transfers_{name}")

    def wait_done(self, buckets: int, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until ``buckets`` buckets are done while the job still runs."""
        def done() -> dict[str, Any] | None:
            job = self.job()
            assert job["State"] in ("Pending", "Running"), f"{self.mode}: ended early: {job}"
            content: dict[str, Any] = job["Content"]
            return content if content["CompletedHttpQueries"] >= buckets else None

        content: dict[str, Any] = poll(done, timeout, f"{self.mode}: {buckets} buckets",
                                       interval=0.1)
        return content

    # -- the fault ----------------------------------------------------------------------

    def fault(self, kind: str) -> None:
        """``stop`` the peer's Orthanc, or ``cut`` the link."""
        self.kind = kind
        self.before = self.job()["Content"]
        if self.mode == "pull":
            self.served_before = self.served()
        assert self.before["Phase"] == "Transfer", (self.mode, self.before)
        assert self.before["CompletedHttpQueries"] < self.before["TotalBuckets"], self.before
        self.faulted_at, self.faulted_wall = time.monotonic(), utc_now()
        if kind == "stop":
            # A graceful stop takes seconds, during which Orthanc still answers: the
            # transfer could finish meanwhile. The link is cut for as long as the stop
            # takes (the requests in flight go), then the stopped peer refuses.
            self.link.cut()
            self.peer.stop()
            self.link.restore()
        else:
            self.link.cut()

    def heal(self, kind: str) -> None:
        if kind == "stop":
            port, storage = self.peer.http_port, self.peer.storage
            self.peer.restart()
            assert (self.peer.http_port, self.peer.storage) == (port, storage)
        else:
            self.link.restore()
        self.healed_at = time.monotonic()

    def observe(self, deadline: float = DEFAULT_DEADLINE) -> dict[str, Any]:
        """One look at the job while its peer is away: it must still run, and once it
        waits, say so in its Content (checked in detail)."""
        job = self.job()
        assert job["State"] == "Running", f"{self.mode}: the job did not wait: {job}"
        content = job["Content"]
        if self.waiting:
            self.phases.add(content["Phase"])
        if content["Phase"] == "Waiting":
            self._check_waiting(content, deadline)
        return job

    def _check_waiting(self, content: dict[str, Any], deadline: float) -> None:
        waiting = content.get("Waiting")
        now = time.monotonic()
        assert isinstance(waiting, dict), f"{self.mode}: Phase Waiting without Waiting: " \
                                          f"{content}"
        assert set(waiting) == {"Peer", "Reason", "Since", "NextTryInSeconds",
                                "GivesUpInSeconds"}, waiting
        assert waiting["Peer"] == self.peer.name, waiting
        assert isinstance(waiting["Reason"], str) and waiting["Reason"], waiting
        since = iso_time(waiting["Since"])
        slack = datetime.timedelta(seconds=2)
        assert self.faulted_wall - slack <= since <= utc_now() + slack, \
            (waiting, self.faulted_wall)
        next_try, gives_up = waiting["NextTryInSeconds"], waiting["GivesUpInSeconds"]
        assert isinstance(next_try, int) and 0 <= next_try <= LONGEST_PROBE_PAUSE + 1, waiting
        # The outage began after the fault: its deadline is at least this far away.
        assert isinstance(gives_up, int), waiting
        assert deadline - (now - self.faulted_at) - 2 <= gives_up <= deadline, waiting
        if not self.waiting:
            self.waiting, self.waiting_seen_at = dict(waiting), now
            self.phases.add("Waiting")
            # The first outage began when one request had used its 5 retries.
            took = now - self.faulted_at
            assert RETRIES_SHORTEST - 1 <= took <= RETRIES_LONGEST + 20, \
                f"{self.mode}: Waiting {took:.1f} s after the fault (retries of ~31 s)"
            # What the attempt cut short had done: its Content stays until the next one
            # (a count that went backwards would say buckets were forgotten).
            assert content["CompletedHttpQueries"] >= self.before["CompletedHttpQueries"], \
                (self.before, content)
            self.before = dict(content)
            if self.mode == "pull" and self.kind == "cut":
                self.served_before = self.served()
        else:                                   # the same outage all along
            assert waiting["Since"] == self.waiting["Since"], (waiting, self.waiting)
            assert gives_up <= self.waiting["GivesUpInSeconds"], (waiting, self.waiting)

    # -- the end ------------------------------------------------------------------------

    def wait_success(self, timeout: float) -> dict[str, Any]:
        job = self.owner.wait_job(self.job_id, timeout=timeout)
        assert job["State"] == "Success", f"{self.mode}: {job}"
        return job

    def assert_identical(self) -> None:
        sent, received = self.source.instance_md5s(), self.destination.instance_md5s()
        assert len(sent) == len(self.files), self.mode
        assert received == sent, f"{self.mode}: not byte-identical"

    def assert_not_sent_again(self, content: dict[str, Any]) -> None:
        """What was verified before the outage was reused, and the last attempt moved
        every other bucket exactly once."""
        done_before = self.before["CompletedHttpQueries"]
        reused, moved, total = (content["ReusedBuckets"], content["CompletedHttpQueries"],
                                content["TotalBuckets"])
        assert reused >= done_before, \
            f"{self.mode}: {done_before} buckets done before the outage, {reused} reused"
        assert reused + moved == total, f"{self.mode}: {content}"
        assert moved >= 1, f"{self.mode}: the outage did not interrupt the transfer"


def wait_all_waiting(transfers: list[Transfer], timeout: float,
                     deadline: float = DEFAULT_DEADLINE) -> None:
    """Until every job waits for its peer, looking at all of them at each turn: each
    begins to wait at its own moment (retry pauses have jitter), and the time a wait is
    first seen must be close to when it began."""
    def all_waiting() -> bool:
        for transfer in transfers:
            transfer.observe(deadline)
        return all(transfer.waiting for transfer in transfers)

    poll(all_waiting, timeout, "every job to wait for its peer")


def at_once(transfers: list[Transfer], action: Callable[[Transfer], object]) -> None:
    """``action`` on every transfer in parallel (stopping an Orthanc takes seconds)."""
    with ThreadPoolExecutor(len(transfers)) as pool:
        for future in [pool.submit(action, transfer) for transfer in transfers]:
            future.result()


def fault_mid_transfer(transfers: list[Transfer], kind: str) -> None:
    """Once each has done a few buckets, fault all of them at once."""
    for transfer in transfers:
        transfer.wait_done(DONE_BEFORE_FAULT)
    at_once(transfers, lambda t: t.fault(kind))


def ride_out(transfers: list[Transfer], kind: str) -> list[dict[str, Any]]:
    """Fault every transfer at once (``stop`` or ``cut``) for ``OUTAGE`` seconds, check
    that each waits instead of failing, heal, and return each finished job."""
    fault_mid_transfer(transfers, kind)
    faulted = max(t.faulted_at for t in transfers)
    try:
        while time.monotonic() < faulted + OUTAGE:
            for transfer in transfers:
                transfer.observe()
            time.sleep(1.0)
    finally:
        at_once(transfers, lambda t: t.heal(kind))
    for transfer in transfers:
        assert transfer.waiting, f"{transfer.mode}: never seen Waiting in {OUTAGE} s"
        assert transfer.phases == {"Waiting"}, \
            f"{transfer.mode}: phases while the peer was away: {transfer.phases}"
    # The next probe is at most ~75 s away, then what is left moves in ~10 s.
    return [t.wait_success(timeout=LONGEST_PROBE_PAUSE + 90) for t in transfers]


def assert_rode_out_one_outage(transfer: Transfer, job: dict[str, Any]) -> None:
    content = job["Content"]
    assert "Waiting" not in content, content
    assert content["Outages"] == 1, content
    # It waited from the start of the outage until the probe after the peer came back.
    finished = time.monotonic()
    waited = content["WaitedSeconds"]
    assert transfer.healed_at - transfer.waiting_seen_at - 2 <= waited, content
    assert waited <= finished - transfer.faulted_at, content
    assert transfer.owner_metric("outages_count") == 1
    assert transfer.owner_metric("outage_waits_count") >= 1
    assert transfer.owner_metric("outage_wait_seconds") >= waited - 1
    # A request used its 5 retries before the job began to wait.
    assert transfer.owner_metric("http_retries_count") >= MAX_HTTP_RETRIES


def transfers(make_cluster: Any, make_proxy: Any, files: list[bytes],
              **body: Any) -> list[Transfer]:
    """A push and a pull, each between its own two servers, started together."""
    prepared = [Transfer.prepare(make_cluster, make_proxy, files, mode) for mode in MODES]
    return [transfer.begin(**body) for transfer in prepared]


def by_mode(items: list[Transfer]) -> dict[str, Transfer]:
    return {t.mode: t for t in items}


# -- a link that resets connections -----------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", MODES)
def test_a_link_that_resets_every_few_megabytes(make_cluster: Any, make_proxy: Any,
                                                big_study: list[bytes], mode: str) -> None:
    """Each reset fails the request in progress; the default retries carry it. Buckets
    are compressed ("gzip": what pays between two peers of ours) to ~1.5 MB, under the
    2 MB between two resets: a plain 4 MiB bucket alone on the link could never pass."""
    transfer = Transfer.prepare(make_cluster, make_proxy, big_study, mode, RESETTING)
    transfer.begin("gzip")
    job = transfer.wait_success(timeout=150)
    transfer.assert_identical()
    resets = transfer.link.counters.resets
    retries = transfer.owner_metric("http_retries_count")
    assert resets >= 2, f"{mode}: the link reset only {resets} connection(s) " \
                        f"({transfer.link.bytes_passed} bytes passed)"
    assert retries >= 1, f"{mode}: {resets} resets survived without a retry? {job}"
    print(f"{mode}: survived {resets} connection resets with {retries:g} retries "
          f"({job['Content'].get('Outages')} outage(s))")


# -- a peer down for 90 s, a link cut for 90 s -------------------------------------------


@pytest.mark.timeout(480)
def test_the_peers_orthanc_stopped_for_90_s(make_cluster: Any, make_proxy: Any,
                                            big_study: list[bytes]) -> None:
    """Push: the receiver stops; pull: the source stops. Both jobs wait, probe, and
    finish by themselves once it is back on the same port with the same storage."""
    both = transfers(make_cluster, make_proxy, big_study)
    jobs = ride_out(both, "stop")
    for transfer, job in zip(both, jobs, strict=True):
        transfer.assert_identical()
        content = job["Content"]
        transfer.assert_not_sent_again(content)
        assert_rode_out_one_outage(transfer, job)
    pull = by_mode(both)["pull"]
    content = pull.job()["Content"]
    # The source's counters restarted at 0: it served exactly the buckets not reused,
    # and in all at most those in flight at the stop more than the study's buckets.
    served_after = pull.served()
    assert served_after == content["TotalBuckets"] - content["ReusedBuckets"], content
    assert pull.served_before + served_after <= content["TotalBuckets"] + IN_FLIGHT_MAX
    push = by_mode(both)["push"]
    # Push: the sender counts the bytes of every bucket the receiver acknowledged, in
    # every attempt: none twice (plain buckets: the study's bytes at most).
    sent = push.owner_metric("push_sent_bytes")
    assert sent <= sum(len(f) for f in big_study), sent


@pytest.mark.timeout(480)
def test_the_link_cut_for_90_s(make_cluster: Any, make_proxy: Any,
                               big_study: list[bytes]) -> None:
    """Every connection reset, new ones reset at once: both servers keep running, so
    what crossed the link is counted exactly on the far side."""
    both = transfers(make_cluster, make_proxy, big_study)
    jobs = ride_out(both, "cut")
    study_bytes = sum(len(f) for f in big_study)
    for transfer, job in zip(both, jobs, strict=True):
        transfer.assert_identical()
        transfer.assert_not_sent_again(job["Content"])
        assert_rode_out_one_outage(transfer, job)
        assert transfer.link.counters.refused >= 1, "no request while the link was cut?"
    pull = by_mode(both)["pull"]
    content = pull.job()["Content"]
    served, at_cut, total = pull.served(), pull.served_before, content["TotalBuckets"]
    # After the cut, exactly the buckets not reused; before it, those done and at most
    # those in flight when the link was cut; in all, every bucket once and those.
    assert served - at_cut == total - content["ReusedBuckets"], (served, at_cut, content)
    assert at_cut - pull.before["CompletedHttpQueries"] <= IN_FLIGHT_MAX, (at_cut, pull.before)
    assert total <= served <= total + IN_FLIGHT_MAX, (served, content)
    push = by_mode(both)["push"]
    # The receiver accepted every plain bucket exactly once: the study's bytes.
    received = push.destination.metric("orthanc_transfers_push_received_bucket_bytes")
    assert received == study_bytes, (received, study_bytes)


# -- an outage longer than the job's deadline ---------------------------------------------


@pytest.mark.timeout(300)
def test_an_outage_beyond_the_jobs_deadline_fails_then_resubmit_finishes(
        make_cluster: Any, make_proxy: Any, big_study: list[bytes]) -> None:
    deadline = 20
    both = transfers(make_cluster, make_proxy, big_study, OutageDeadline=deadline)
    fault_mid_transfer(both, "stop")
    wait_all_waiting(both, timeout=RETRIES_LONGEST + 20, deadline=deadline)
    for transfer in both:
        failed = transfer.owner.wait_job(transfer.job_id, timeout=deadline + 40)
        waited = time.monotonic() - transfer.waiting_seen_at
        assert failed["State"] == "Failure", f"{transfer.mode}: {failed}"
        assert waited >= deadline - 2, f"{transfer.mode}: failed after {waited:.0f} s"
        description = failed["ErrorDescription"]
        assert "unreachable" in description.lower(), description
        assert re.search(r"deadline|\b20 ?s\b", description, re.IGNORECASE), description
        assert failed["Content"]["FailureReason"]["Peer"] == transfer.peer.name, failed
        if transfer.mode == "pull":                  # (the push's receiver is down)
            assert transfer.destination.get_json("/instances") == []  # nothing imported
    at_once(both, lambda t: t.heal("stop"))
    for transfer in both:
        assert transfer.owner.post(f"/jobs/{transfer.job_id}/resubmit").json() == {}
    for transfer in both:
        job = transfer.wait_success(timeout=90)
        transfer.assert_identical()
        transfer.assert_not_sent_again(job["Content"])


# -- pause and cancel while waiting -------------------------------------------------------


def assert_quiet(links: list[WanProxy], seconds: float) -> None:
    """No connection, no byte on any of ``links`` for ``seconds``."""
    def traffic() -> list[tuple[int, int, int]]:
        return [(link.counters.up, link.counters.down, link.counters.connections)
                for link in links]

    before = traffic()
    time.sleep(seconds)
    assert traffic() == before


@pytest.mark.timeout(300)
def test_pause_and_cancel_while_waiting(make_cluster: Any, make_proxy: Any,
                                        big_study: list[bytes]) -> None:
    """The push job is paused while it waits, the pull job cancelled; after the link is
    back the first is resumed and the second resubmitted: both finish."""
    both = by_mode(transfers(make_cluster, make_proxy, big_study))
    paused, cancelled = both["push"], both["pull"]
    fault_mid_transfer(list(both.values()), "cut")
    wait_all_waiting(list(both.values()), timeout=RETRIES_LONGEST + 20)

    assert paused.owner.post(f"/jobs/{paused.job_id}/pause").json() == {}
    assert cancelled.owner.post(f"/jobs/{cancelled.job_id}/cancel").json() == {}
    # At once, not at the next probe.
    wait_for(lambda: paused.job()["State"] == "Paused", 5, "push: Paused")
    gone = cancelled.owner.wait_job(cancelled.job_id, timeout=5)
    assert gone["State"] == "Failure" and gone["ErrorCode"] == 37, gone   # canceled

    at_once(list(both.values()), lambda t: t.heal("cut"))
    # Neither moves by itself once the peer is back: no probe, no bucket.
    assert_quiet([paused.link, cancelled.link], 5.0)
    assert paused.job()["State"] == "Paused"
    assert cancelled.destination.get_json("/instances") == []    # nothing half-imported

    assert paused.owner.post(f"/jobs/{paused.job_id}/resume").json() == {}
    assert cancelled.owner.post(f"/jobs/{cancelled.job_id}/resubmit").json() == {}
    for transfer in both.values():
        job = transfer.wait_success(timeout=90)
        transfer.assert_identical()
        transfer.assert_not_sent_again(job["Content"])
