"""Routes that start transfers (``/transfers/pull``, ``/transfers/send``) and the
receiving end of push mode (``/transfers/push...``, reference §3.2-3.3, §3.7-3.10)."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from .buckets import PushPlan
from .encoding import ENCODING_HEADER, local_encodings, server_seconds_header
from .errors import BadRequest, PeerProtocolError, UnknownResource
from .hostapi import Request, Response
from .protocol import COMMIT_WAIT_HEADER, TransferQuery
from .pull import PULL_JOB_TYPE
from .push import PUSH_JOB_TYPE
from .retry import run_with_retries
from .routing import Route, parse_json_body, parse_json_object
from .tracking import TRACKING_JOB_TYPE

if TYPE_CHECKING:
    from .app import TransfersApp

_TRANSACTION_ID = re.compile(r"^[0-9a-f-]{1,64}$")


def post_pull(app: TransfersApp, request: Request) -> Response:
    query = TransferQuery.from_wire(parse_json_object(request))
    app.services.peer(query.peer)                 # 404 now rather than a failed job later
    job = app.engine.submit(PULL_JOB_TYPE, query.to_wire(), query.priority)
    return Response.json({"ID": job.id, "Path": f"/jobs/{job.id}"})


def post_send(app: TransfersApp, request: Request) -> Response:
    query = TransferQuery.from_wire(parse_json_object(request))
    peer = app.services.peer(query.peer)
    if not peer.remote_self:
        job = app.engine.submit(PUSH_JOB_TYPE, query.to_wire(), query.priority)
        return Response.json({"ID": job.id, "Path": f"/jobs/{job.id}"})
    # Pull mode: the peer pulls from us under the name it knows us by (reference §5.2).
    # The request as it came (our extensions only when it set them), under the name the
    # peer knows us by; Priority is not forwarded, as in the original.
    body = {**query.to_wire(), "Originator": app.originator, "Peer": peer.remote_self}
    del body["Priority"]
    client = app.services.client(peer)
    headers = {"sender-transfer-id": query.sender_transfer_id or app.originator}
    remote = run_with_retries(lambda: client.post_json("/transfers/pull", body, headers=headers),
                              app.services.retry_policy())
    if not isinstance(remote, dict) or not isinstance(remote.get("ID"), str) \
            or not isinstance(remote.get("Path"), str):
        raise PeerProtocolError(f"Peer {peer.name} did not create a pull job: check its logs "
                                "and that the transfers plugin is installed there",
                                peer=peer.name, uri="/transfers/pull")
    answer = {"Peer": peer.name, "RemoteJob": remote["ID"],
              "URL": peer.url.rstrip("/") + remote["Path"]}
    app.engine.submit(TRACKING_JOB_TYPE, {**answer, "Resources": list(query.raw_resources),
                                          "Compression": query.compression.value},
                      query.priority)
    return Response.json(answer)


# -- receiving end of push mode -----------------------------------------------------------


def _transaction_id(request: Request) -> str:
    tx_id = request.groups[0]
    if not _TRANSACTION_ID.match(tx_id):
        raise UnknownResource(f"Unknown push transaction: {tx_id!r}")
    return tx_id


def post_push(app: TransfersApp, request: Request) -> Response:
    received = time.perf_counter()
    plan = PushPlan.from_wire(parse_json_body(request), app.config.max_instance_size)
    tx = app.push_receiver.create(plan)
    # "Encodings" is an extension: a sender of ours may then adapt each bucket.
    answer = Response.json({"ID": tx.id, "Path": f"/transfers/push/{tx.id}",
                            "Encodings": list(local_encodings())})
    answer.headers.update(server_seconds_header(received))
    return answer


def get_push_transaction(app: TransfersApp, request: Request) -> Response:
    return Response.json(app.push_receiver.status(_transaction_id(request)))


def delete_push_transaction(app: TransfersApp, request: Request) -> Response:
    app.push_receiver.delete(_transaction_id(request))
    return Response(body="{}")


def put_push_bucket(app: TransfersApp, request: Request) -> Response:
    received = time.perf_counter()
    app.push_receiver.put(_transaction_id(request), request.groups[1], request.body,
                          request.headers.get(ENCODING_HEADER.lower()))
    return Response(body="{}", headers=server_seconds_header(received))


def post_push_commit(app: TransfersApp, request: Request) -> Response:
    if request.groups[1] != "commit":
        raise UnknownResource(f"Unknown route: {request.uri}")
    wait = request.headers.get(COMMIT_WAIT_HEADER.lower())
    app.push_receiver.commit(_transaction_id(request), _commit_wait(wait))
    return Response(body="{}")


def _commit_wait(value: str | None) -> float:
    """The seconds a sender of ours lets a commit wait for buckets still in flight."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise BadRequest(f"{COMMIT_WAIT_HEADER} must be a number of seconds, got {value!r}")
    return seconds


ROUTES = [
    Route("/transfers/pull", {"POST": post_pull}),
    Route("/transfers/push", {"POST": post_push}),
    # Narrow patterns, as the original's: the Python plugin answers 500 by itself for path
    # segments that are not UTF-8, so those must not reach a plugin route (core: 404).
    Route("/transfers/push/([0-9a-f-]+)", {"GET": get_push_transaction,
                                           "DELETE": delete_push_transaction}),
    Route("/transfers/push/([0-9a-f-]+)/([0-9]+|commit)", {"PUT": put_push_bucket,
                                                          "POST": post_push_commit}),
    Route("/transfers/send", {"POST": post_send}),
]
