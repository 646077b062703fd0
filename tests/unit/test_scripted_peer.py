"""The scripted peer of ``devkit`` itself: rules, faults, recording, delegation, shutdown."""

from __future__ import annotations

import threading
import time

import pytest
import urllib3
from orthanc_transfers.hostapi import Request, Response

from devkit.scripted_peer import (
    Exchange,
    Fault,
    Reply,
    Rule,
    ScriptedPeer,
    error_reply,
    json_reply,
    once,
    route_delegate,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=5)


def test_rules_answer_in_order_and_every_request_is_recorded(http: urllib3.PoolManager) -> None:
    peer = ScriptedPeer([once("GET", "/a", error_reply(503, "busy")),
                         Rule("GET", "/a", (json_reply(1), json_reply(2))),
                         Rule("PUT", r"/b/\d+", (Reply(201, b"made", {"X-Made": "yes"}),),
                              when=lambda e: e.query.get("ok") == "1")])
    with peer as url:
        statuses = [http.request("GET", url + "a").status for _ in range(2)]
        assert http.request("GET", url + "a").data == b"2"        # the last one repeats
        made = http.request("PUT", url + "b/7?ok=1", body=b"data", headers={"X-Y": "z"})
        assert (made.status, made.data, made.headers["X-Made"]) == (201, b"made", "yes")
        assert http.request("PUT", url + "b/7?ok=0", body=b"").status == 404  # no delegate
    assert statuses == [503, 200]
    recorded = peer.requests
    assert [(e.method, e.path, e.status) for e in recorded] == [
        ("GET", "/a", 503), ("GET", "/a", 200), ("GET", "/a", 200), ("PUT", "/b/7", 201),
        ("PUT", "/b/7", 404)]
    assert recorded[3].query == {"ok": "1"} and recorded[3].body == b"data"
    assert recorded[3].headers["x-y"] == "z" and recorded[0].answer_json()["HttpStatus"] == 503
    assert peer.requests_to("PUT", r"/b/\d+") == recorded[3:]


@pytest.mark.parametrize(("fault", "cause"), [(Fault.RESET, ConnectionResetError),
                                              (Fault.CLOSE, Exception)])
def test_a_dropped_connection_gets_no_answer(http: urllib3.PoolManager, fault: Fault,
                                             cause: type[BaseException]) -> None:
    peer = ScriptedPeer([once("POST", "/x", Reply(fault=fault)), Rule("POST", "/x")])
    with peer as url:
        with pytest.raises(urllib3.exceptions.ProtocolError) as raised:
            http.request("POST", url + "x", body=b"payload")
        assert isinstance(raised.value.args[1], cause)
        assert http.request("POST", url + "x", body=b"payload").status == 404   # then as usual
    assert [e.status for e in peer.requests] == [None, 404]
    assert peer.requests[0].body == b"payload"


def test_corrupt_flips_one_byte_of_the_answer(http: urllib3.PoolManager) -> None:
    with ScriptedPeer([Rule("GET", "/c", (Reply(200, b"abcdef", fault=Fault.CORRUPT),))]) as url:
        data = http.request("GET", url + "c").data
    assert len(data) == 6 and sum(a != b for a, b in zip(data, b"abcdef", strict=True)) == 1


def test_hold_and_delay_postpone_the_answer(http: urllib3.PoolManager) -> None:
    gate = threading.Event()
    peer = ScriptedPeer([Rule("GET", "/held", (Reply(204, hold=gate),)),
                         Rule("GET", "/late", (Reply(204, delay=0.05),))])
    answers: list[int] = []
    with peer as url:
        waiting = threading.Thread(target=lambda: answers.append(
            http.request("GET", url + "held").status))
        waiting.start()
        deadline = time.monotonic() + 5
        while not peer.requests and time.monotonic() < deadline:
            time.sleep(0.005)
        assert answers == [] and len(peer.requests) == 1
        gate.set()
        waiting.join(5)
        started = time.monotonic()
        assert http.request("GET", url + "late").status == 204
        assert time.monotonic() - started >= 0.05
    assert answers == [204]


def test_the_delegate_answers_what_no_rule_scripts(http: urllib3.PoolManager) -> None:
    def handler(request: Request) -> Response:
        if request.method != "GET":
            return Response(status=405, allowed_method="GET")
        return Response.json({"groups": list(request.groups), "args": request.args})

    routes = {"/items/([0-9]+)": handler}
    with ScriptedPeer.forwarding_to(routes, [once("GET", "/items/1", error_reply(500, "x"))]) \
            as url:
        assert http.request("GET", url + "items/1").status == 500
        answer = http.request("GET", url + "items/1?q=a+b")
        refused = http.request("DELETE", url + "items/1")
        missing = http.request("GET", url + "elsewhere")
    assert answer.json() == {"groups": ["1"], "args": {"q": "a b"}}
    assert (refused.status, refused.headers["Allow"]) == (405, "GET")
    assert missing.status == 404 and missing.json()["HttpStatus"] == 404


def test_route_delegate_answers_an_exchange_without_a_socket() -> None:
    routes = {"/echo": lambda request: Response(body=request.body, content_type="text/plain",
                                                headers={"X-Seen": request.headers["x-a"]})}
    answer = route_delegate(routes)(Exchange("PUT", "/echo", {}, {"x-a": "1"}, b"hi"))
    assert (answer.status, answer.body) == (200, b"hi")
    assert answer.headers == {"X-Seen": "1", "Content-Type": "text/plain"}


def test_closing_ends_every_thread_even_with_idle_and_held_connections(
        http: urllib3.PoolManager) -> None:
    before = set(threading.enumerate())
    gate = threading.Event()                          # never set
    peer = ScriptedPeer([Rule("GET", "/held", (Reply(204, hold=gate),))])
    url = peer.start()
    assert http.request("GET", url + "idle").status == 404    # a keep-alive connection
    outcome: list[str] = []

    def ask() -> None:
        try:
            outcome.append(str(http.request("GET", url + "held").status))
        except urllib3.exceptions.ProtocolError as e:
            outcome.append(type(e.args[1]).__name__)

    held = threading.Thread(target=ask)
    held.start()
    deadline = time.monotonic() + 5
    while len(peer.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    peer.close()
    held.join(5)
    assert outcome == ["RemoteDisconnected"]          # a held answer is never sent
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(RuntimeError):
        _ = peer.url
