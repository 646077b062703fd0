"""Routes that start transfers (``/transfers/pull``, ``/transfers/send``) and the
receiving end of push mode (``/transfers/push...``, reference §3.2-3.3, §3.7-3.10)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from .buckets import PushPlan
from .encoding import ENCODING_HEADER, local_encodings, server_seconds_header
from .engine import JobEngine
from .errors import BadRequest, PeerProtocolError, UnknownResource
from .hostapi import Request, Response
from .protocol import COMMIT_WAIT_HEADER, TransferQuery
from .pull import PULL_JOB_TYPE
from .push import PUSH_JOB_TYPE
from .push_receiver import PushReceiver
from .retry import run_with_retries
from .routing import Route, parse_json_body, parse_json_object
from .services import Services
from .tracking import TRACKING_JOB_TYPE

_TRANSACTION_ID = re.compile(r"^[0-9a-f-]{1,64}$")


@dataclass(frozen=True)
class StartingApi:
    """What the routes that start transfers use: peers and settings, and the engine."""
    services: Services
    engine: JobEngine


@dataclass(frozen=True)
class ReceivingApi:
    """What the receiving end of push mode uses."""
    receiver: PushReceiver
    max_instance_size: int          # bytes (Transfers.MaxInstanceSize)


def post_pull(api: StartingApi, request: Request) -> Response:
    query = TransferQuery.from_wire(parse_json_object(request))
    api.services.peer(query.peer)                 # 404 now rather than a failed job later
    job = api.engine.submit(PULL_JOB_TYPE, query.to_wire(), query.priority)
    return Response.json({"ID": job.id, "Path": f"/jobs/{job.id}"})


def post_send(api: StartingApi, request: Request) -> Response:
    query = TransferQuery.from_wire(parse_json_object(request))
    services = api.services
    peer = services.peer(query.peer)
    if not peer.remote_self:
        job = api.engine.submit(PUSH_JOB_TYPE, query.to_wire(), query.priority)
        return Response.json({"ID": job.id, "Path": f"/jobs/{job.id}"})
    # Pull mode: the peer pulls from us under the name it knows us by (reference §5.2).
    # The request as it came (our extensions only when it set them), under the name the
    # peer knows us by; Priority is not forwarded, as in the original.
    body = {**query.to_wire(), "Originator": services.originator, "Peer": peer.remote_self}
    del body["Priority"]
    client = services.client(peer)
    headers = {"sender-transfer-id": query.sender_transfer_id or services.originator}
    remote = run_with_retries(lambda: client.post_json("/transfers/pull", body, headers=headers),
                              services.retry_policy())
    if not isinstance(remote, dict) or not isinstance(remote.get("ID"), str) \
            or not isinstance(remote.get("Path"), str):
        raise PeerProtocolError(f"Peer {peer.name} did not create a pull job: check its logs "
                                "and that the transfers plugin is installed there",
                                peer=peer.name, uri="/transfers/pull")
    answer = {"Peer": peer.name, "RemoteJob": remote["ID"],
              "URL": peer.url.rstrip("/") + remote["Path"]}
    tracking = {**answer, "Resources": list(query.raw_resources),
                "Compression": query.compression.value}
    if query.outage_deadline is not None:
        tracking["OutageDeadline"] = query.outage_deadline
    api.engine.submit(TRACKING_JOB_TYPE, tracking, query.priority)
    return Response.json(answer)


# -- receiving end of push mode -----------------------------------------------------------


def _transaction_id(request: Request) -> str:
    tx_id = request.groups[0]
    if not _TRANSACTION_ID.match(tx_id):
        raise UnknownResource(f"Unknown push transaction: {tx_id!r}")
    return tx_id


def post_push(api: ReceivingApi, request: Request) -> Response:
    received = time.perf_counter()
    plan = PushPlan.from_wire(parse_json_body(request), api.max_instance_size)
    tx = api.receiver.create(plan)
    # "Encodings" is an extension: a sender of ours may then adapt each bucket.
    answer = Response.json({"ID": tx.id, "Path": f"/transfers/push/{tx.id}",
                            "Encodings": list(local_encodings())})
    answer.headers.update(server_seconds_header(received))
    return answer


def get_push_transaction(api: ReceivingApi, request: Request) -> Response:
    return Response.json(api.receiver.status(_transaction_id(request)))


def delete_push_transaction(api: ReceivingApi, request: Request) -> Response:
    api.receiver.delete(_transaction_id(request))
    return Response(body="{}")


def put_push_bucket(api: ReceivingApi, request: Request) -> Response:
    received = time.perf_counter()
    api.receiver.put(_transaction_id(request), request.groups[1], request.body,
                          request.headers.get(ENCODING_HEADER.lower()))
    return Response(body="{}", headers=server_seconds_header(received))


def post_push_commit(api: ReceivingApi, request: Request) -> Response:
    if request.groups[1] != "commit":
        raise UnknownResource(f"Unknown route: {request.uri}")
    wait = request.headers.get(COMMIT_WAIT_HEADER.lower())
    api.receiver.commit(_transaction_id(request), _commit_wait(wait))
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


def routes(starting: StartingApi, receiving: ReceivingApi) -> list[Route[Any]]:
    return [
        Route("/transfers/pull", starting, {"POST": post_pull}),
        Route("/transfers/push", receiving, {"POST": post_push}),
        # Narrow patterns, as the original's: the Python plugin answers 500 by itself for
        # path segments that are not UTF-8, so those must not reach a plugin route (core: 404).
        Route("/transfers/push/([0-9a-f-]+)", receiving,
              {"GET": get_push_transaction, "DELETE": delete_push_transaction}),
        Route("/transfers/push/([0-9a-f-]+)/([0-9]+|commit)", receiving,
              {"PUT": put_push_bucket, "POST": post_push_commit}),
        Route("/transfers/send", starting, {"POST": post_send}),
    ]
