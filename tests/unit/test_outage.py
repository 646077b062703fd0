"""Riding out outages: the policy's arithmetic (no sleeping), then pull, push and the
engine's slots over fake Orthancs, with pauses shortened to milliseconds."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from engine_harness import wait_for
from fake_host import FakeHost
from flow_support import (
    CHUNKS,
    PUT_BUCKET,
    add_study,
    job,
    job_threads,
    make_host,
    post,
    running,
    start_job,
    transfer_query,
    wait_job,
)
from orthanc_transfers import tracking, transfer_job
from orthanc_transfers.buckets import PushPlan
from orthanc_transfers.errors import (
    PeerCertificateRefused,
    PeerCorruption,
    PeerHttpError,
    PeerProtocolError,
    PeerUnreachable,
    RetriesExhausted,
)
from orthanc_transfers.outage import OutageLog, OutagePolicy, is_outage

from devkit.scripted_peer import Fault, Reply, Rule, ScriptedPeer, error_reply, json_reply

pytestmark = pytest.mark.timeout(60)

# -- the policy ---------------------------------------------------------------------------


def test_probes_back_off_from_5_s_to_a_minute_with_jitter() -> None:
    policy = OutagePolicy(deadline=3600)
    assert [policy.pause(n, 0.5) for n in range(7)] == [5, 10, 20, 40, 60, 60, 60]
    assert (policy.pause(0, 0.0), policy.pause(4, 0.999)) == (3.75, pytest.approx(74.97))


def test_the_deadline_counts_from_the_start_of_the_outage() -> None:
    policy = OutagePolicy(deadline=100)
    assert policy.gives_up_in(started=1000, now=1030) == 70
    assert policy.gives_up_in(started=1000, now=1200) == 0


@pytest.mark.parametrize(("error", "away"), [
    (PeerUnreachable("connection refused"), True),
    (PeerHttpError("bad gateway", status=502), True),
    (PeerHttpError("unavailable", status=503), True),
    (PeerHttpError("gateway timeout", status=504), True),
    (RetriesExhausted("gave up", PeerUnreachable("reset"), ()), True),
    (PeerHttpError("internal error", status=500), False),
    (PeerHttpError("unknown job", status=404), False),
    (PeerHttpError("who are you", status=401), False),
    (PeerCorruption("damaged", status=400), False),
    (PeerProtocolError("not JSON"), False),
    (PeerCertificateRefused("certificate verify failed"), False),
    (RetriesExhausted("gave up", PeerHttpError("no", status=400), ()), False),
], ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value))
def test_an_outage_is_an_unreachable_peer_or_a_gateway_saying_so(error: Exception,
                                                                  away: bool) -> None:
    assert is_outage(error) is away


def test_the_outage_log_shows_the_wait_and_counts_outages() -> None:
    log, policy = OutageLog(), OutagePolicy(deadline=600)
    assert log.content(policy, now=0) == {"WaitedSeconds": 0, "Outages": 0}
    first, new = log.begin("b", "refused", now=100)
    log.scheduled(next_probe=140)
    waiting = log.content(policy, now=110)["Waiting"]
    assert new and waiting["Peer"] == "b" and waiting["Reason"] == "refused"
    assert (waiting["NextTryInSeconds"], waiting["GivesUpInSeconds"]) == (30, 590)
    log.waited_for(40)
    log.resumed()                                   # a probe answered: no longer waiting
    assert "Waiting" not in log.content(policy, now=141)
    again, new = log.begin("b", "refused again", now=150)   # nothing moved meanwhile
    assert again is first and not new and again.probes == 1
    log.end()                                       # the transfer moved
    log.begin("b", "reset", now=300)
    assert log.content(policy, now=300)["Outages"] == 2
    assert log.content(policy, now=300)["WaitedSeconds"] == 40


# -- jobs over fake Orthancs --------------------------------------------------------------


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes 20 ms apart instead of 5 s to a minute; the same policy otherwise."""
    fast = functools.partial(OutagePolicy, first_pause=0.02, longest_pause=0.05)
    monkeypatch.setattr(transfer_job, "OutagePolicy", fast)
    monkeypatch.setattr(tracking, "OutagePolicy", fast)


def refusing(times: int) -> Rule:
    """The peer's probes (``GET /system``) get their connection reset ``times`` times."""
    return Rule("GET", "/system", (Reply(fault=Fault.RESET),), times=times)


def md5s(files: dict[str, bytes]) -> list[str]:
    return sorted(hashlib.md5(data).hexdigest() for data in files.values())


@pytest.fixture
def pull_setup(tmp_path: Path) -> Iterator[tuple[FakeHost, FakeHost, ScriptedPeer,
                                                   dict[str, bytes]]]:
    source = make_host(tmp_path / "source")
    files = add_study(source)
    receiver = make_host(tmp_path / "receiver", OutageDeadline=30)
    peer = ScriptedPeer.forwarding_to(source.routes)
    with running(source), running(receiver), peer as url:
        receiver.add_peer("source", url)
        yield source, receiver, peer, files
    assert job_threads() == [] and peer.errors == []


def test_a_pull_waits_for_its_source_and_goes_on_without_fetching_twice(
        pull_setup: tuple[FakeHost, FakeHost, ScriptedPeer, dict[str, bytes]]) -> None:
    _, receiver, peer, files = pull_setup
    peer.add(Rule("GET", CHUNKS, (Reply(),), times=2),
             Rule("GET", CHUNKS, (error_reply(503, "down"),)), refusing(1000))
    job_id = start_job(receiver, "/transfers/pull", transfer_query("source"))
    waiting = wait_job(receiver, job_id, "Running", phase="Waiting")
    assert waiting["Content"]["Waiting"]["Peer"] == "source"
    wait_for(lambda: len(peer.requests_to("GET", "/system")) >= 3, "three refused probes")
    peer.rules.clear()                                      # the source is back
    done = wait_job(receiver, job_id, "Success", "Failure")
    assert done["State"] == "Success", done
    assert md5s({str(n): data for n, data in enumerate(receiver.stored)}) == md5s(files)
    content = done["Content"]
    assert content["Outages"] == 1 and "Waiting" not in content
    served = [(e.path, e.query["offset"]) for e in peer.requests_to("GET", CHUNKS)
              if e.status == 200]
    assert len(served) == len(set(served)) == content["TotalBuckets"]    # none twice
    assert receiver.metrics["orthanc_transfers_outages_count"] == 1
    assert receiver.metrics["orthanc_transfers_outage_waits_count"] >= 4   # 3 refused + 1
    assert receiver.metrics["orthanc_transfers_outage_wait_seconds"] > 0


def test_past_the_deadline_the_job_fails_and_a_resubmit_finishes_it(
        pull_setup: tuple[FakeHost, FakeHost, ScriptedPeer, dict[str, bytes]]) -> None:
    _, receiver, peer, files = pull_setup
    down = Rule("GET", CHUNKS, (error_reply(503, "down"),))
    peer.add(down, Rule("GET", "/system", (Reply(fault=Fault.RESET),)))
    job_id = start_job(receiver, "/transfers/pull",
                       transfer_query("source", OutageDeadline=0.3))
    failed = wait_job(receiver, job_id, "Failure")
    assert "outage deadline (0.3 s" in failed["ErrorDescription"]
    assert failed["Content"]["FailureReason"]["Peer"] == "source"
    peer.rules.clear()                                      # the source is back
    assert post(receiver, f"/jobs/{job_id}/resubmit", {})[0] == 200
    assert wait_job(receiver, job_id, "Success", "Failure")["State"] == "Success"
    assert len(receiver.stored) == len(files)


def test_a_bad_outage_deadline_is_refused(
        pull_setup: tuple[FakeHost, FakeHost, ScriptedPeer, dict[str, bytes]]) -> None:
    receiver = pull_setup[1]
    for value in (-1, "10", True):
        status, answer = post(receiver, "/transfers/pull",
                              transfer_query("source", OutageDeadline=value))
        assert status == 400 and "OutageDeadline" in answer["Message"], answer


def test_pause_while_waiting_then_resume(
        pull_setup: tuple[FakeHost, FakeHost, ScriptedPeer, dict[str, bytes]]) -> None:
    _, receiver, peer, files = pull_setup
    down = Rule("GET", CHUNKS, (error_reply(503, "down"),))
    peer.add(down, Rule("GET", "/system", (Reply(fault=Fault.RESET),)))
    job_id = start_job(receiver, "/transfers/pull", transfer_query("source"))
    wait_job(receiver, job_id, "Running", phase="Waiting")
    assert post(receiver, f"/jobs/{job_id}/pause", {})[0] == 200
    wait_job(receiver, job_id, "Paused")
    peer.rules.clear()
    assert post(receiver, f"/jobs/{job_id}/resume", {})[0] == 200
    assert wait_job(receiver, job_id, "Success", "Failure")["State"] == "Success"
    assert len(receiver.stored) == len(files)


@dataclass
class TwoSources:
    """A receiver with ConcurrentJobs 1, a healthy source and one that is down (its
    chunks answer 503, its probes are reset) until ``away_peer.rules`` are cleared."""
    receiver: FakeHost
    healthy_peer: ScriptedPeer
    away_peer: ScriptedPeer
    files: list[bytes]


@contextlib.contextmanager
def two_sources(tmp_path: Path, **receiver_options: object) -> Iterator[TwoSources]:
    healthy, away = make_host(tmp_path / "healthy"), make_host(tmp_path / "away")
    files = [*add_study(healthy).values(), *add_study(away, seed=50).values()]
    receiver = make_host(tmp_path / "receiver", ConcurrentJobs=1, **receiver_options)
    to_healthy = ScriptedPeer.forwarding_to(healthy.routes)
    to_away = ScriptedPeer.forwarding_to(away.routes)
    to_away.add(Rule("GET", CHUNKS, (error_reply(503, "down"),)),
                Rule("GET", "/system", (Reply(fault=Fault.RESET),)))
    with running(healthy), running(away), running(receiver), to_healthy as url_a, \
            to_away as url_b:
        receiver.add_peer("healthy", url_a)
        receiver.add_peer("away", url_b)
        yield TwoSources(receiver, to_healthy, to_away, files)


def test_a_job_waiting_for_a_peer_lends_its_slot(tmp_path: Path) -> None:
    """ConcurrentJobs 1: a pull from a source that is down waits without holding up a
    pull from another source; once its source is back, it finishes too."""
    with two_sources(tmp_path, OutageDeadline=30) as setup:
        receiver = setup.receiver
        waiting = start_job(receiver, "/transfers/pull", transfer_query("away"))
        wait_job(receiver, waiting, "Running", phase="Waiting")
        other = start_job(receiver, "/transfers/pull", transfer_query("healthy"))
        assert wait_job(receiver, other, "Success", "Failure")["State"] == "Success"
        assert job(receiver, waiting)["State"] == "Running"
        setup.away_peer.rules.clear()
        assert wait_job(receiver, waiting, "Success", "Failure")["State"] == "Success"
    assert sorted(receiver.stored) == sorted(setup.files)


def test_a_push_waits_for_its_receiver_and_sends_only_what_it_lacks(tmp_path: Path) -> None:
    sender = make_host(tmp_path / "sender", OutageDeadline=30)
    files = add_study(sender)
    receiver = make_host(tmp_path / "receiver")
    peer = ScriptedPeer.forwarding_to(receiver.routes)
    peer.add(Rule("PUT", PUT_BUCKET, (Reply(),), times=2),
             Rule("PUT", PUT_BUCKET, (Reply(fault=Fault.RESET),)), refusing(1000))
    with running(sender), running(receiver), peer as url:
        sender.add_peer("receiver", url)
        job_id = start_job(sender, "/transfers/send", transfer_query("receiver"))
        wait_job(sender, job_id, "Running", phase="Waiting")
        wait_for(lambda: len(peer.requests_to("GET", "/system")) >= 2, "two refused probes")
        peer.rules.clear()                                  # the receiver is back
        done = wait_job(sender, job_id, "Success", "Failure")
        assert done["State"] == "Success", done
        accepted = [e.path for e in peer.requests_to("PUT", PUT_BUCKET) if e.status == 200]
        assert len(accepted) == len(set(accepted)) == done["Content"]["TotalBuckets"]
        assert done["Content"]["Outages"] == 1
        creations = peer.requests_to("POST", "/transfers/push")
        assert len(creations) == 1 and creations[0].json()["OutageDeadline"] == 30
    assert sorted(receiver.stored) == sorted(files.values())


def test_the_receiver_keeps_an_idle_transaction_as_long_as_its_sender_waits(
        tmp_path: Path) -> None:
    receiver = make_host(tmp_path / "receiver", PushTransactionTimeout=60)
    with running(receiver) as app:
        plan = {"Instances": [], "Buckets": [], "Compression": "none"}
        longer = app.push_receiver.create(_plan(plan, 7200))
        shorter = app.push_receiver.create(_plan(plan, 10))
        original = app.push_receiver.create(_plan(plan, None))
        assert (longer.keep_idle, shorter.keep_idle, original.keep_idle) == (7800, 610, 60)
    # Orthanc restarts 700 s later: the idle time counts from the files' last write.
    for tx in (longer, shorter, original):
        for path in [tx.area.directory, *tx.area.directory.iterdir()]:
            os.utime(path, (time.time() - 700, time.time() - 700))
    restarted = make_host(tmp_path / "receiver", PushTransactionTimeout=60)
    with running(restarted):
        statuses = [restarted.call("GET", f"/transfers/push/{tx.id}").status
                    for tx in (longer, shorter, original)]
    assert statuses == [200, 404, 404]
    assert not shorter.area.directory.exists()


def _plan(body: dict[str, object], deadline: float | None) -> PushPlan:
    wire = dict(body) if deadline is None else {**body, "OutageDeadline": deadline}
    return PushPlan.from_wire(wire, 1 << 30)


# -- the job that follows a pull-mode send ------------------------------------------------

REMOTE_JOB = "0f0f0f0f-1111-2222-3333-444444444444"
REMOTE_PATH = f"/jobs/{REMOTE_JOB}"


def remote_job(state: str) -> Reply:
    return json_reply({"ID": REMOTE_JOB, "Type": "PullTransfer", "State": state,
                       "Progress": 50, "Content": {}})


@pytest.mark.parametrize(("lost", "outcome"), [
    (Reply(fault=Fault.RESET), "Success"),                 # the link dropped: wait
    (error_reply(404, "Unknown resource"), "Failure"),     # the remote job is gone
], ids=["link-dropped", "job-gone"])
def test_tracking_waits_out_a_dropped_link_but_not_a_vanished_job(
        tmp_path: Path, lost: Reply, outcome: str) -> None:
    host = make_host(tmp_path / "sender", OutageDeadline=30)
    remote = ScriptedPeer([
        Rule("POST", "/transfers/pull", (json_reply({"ID": REMOTE_JOB, "Path": REMOTE_PATH}),)),
        Rule("GET", REMOTE_PATH, (remote_job("Running"), lost, lost, lost,
                                  remote_job("Success")))])
    with running(host), remote as url:
        host.add_peer("remote", url, RemoteSelf="sender")
        status, answer = post(host, "/transfers/send", transfer_query("remote"))
        assert status == 200, answer
        listing = json.loads(host.call("GET", "/jobs", args={"expand": ""}).body)
        job_id = next(j["ID"] for j in listing if j["Type"] == "PullTransferTracking")
        done = wait_job(host, job_id, "Success", "Failure")
    assert done["State"] == outcome, done
    if outcome == "Success":
        assert done["Content"]["Outages"] == 1 and done["Content"]["WaitedSeconds"] == 0
    else:
        assert "404" in done["ErrorDescription"]
    assert job_threads() == []


def test_a_waiting_job_fails_at_its_deadline_even_when_every_slot_is_busy(
        tmp_path: Path) -> None:
    """ConcurrentJobs 1, and the slot taken by a pull that is held mid-way: the job
    whose source is down still fails at its deadline (ending needs no slot)."""
    gate = threading.Event()
    with two_sources(tmp_path) as setup:
        receiver = setup.receiver
        setup.healthy_peer.add(Rule("GET", CHUNKS, (Reply(hold=gate),)))
        doomed = start_job(receiver, "/transfers/pull",
                           transfer_query("away", OutageDeadline=0.5))
        wait_job(receiver, doomed, "Running", phase="Waiting")
        busy = start_job(receiver, "/transfers/pull", transfer_query("healthy"))
        wait_for(lambda: bool(setup.healthy_peer.requests_to("GET", CHUNKS)), "the held pull")
        failed = wait_job(receiver, doomed, "Failure", timeout=5)
        assert "outage deadline" in failed["ErrorDescription"]
        assert job(receiver, busy)["State"] == "Running"
        gate.set()
        assert wait_job(receiver, busy, "Success", "Failure")["State"] == "Success"
