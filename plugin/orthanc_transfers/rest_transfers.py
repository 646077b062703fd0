"""``/transfers/pull`` and ``/transfers/send``: the routes that start transfers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hostapi import Request, Response
from .protocol import TransferQuery
from .pull import PULL_JOB_TYPE
from .routing import Route, parse_json_object

if TYPE_CHECKING:
    from .app import TransfersApp


def post_pull(app: TransfersApp, request: Request) -> Response:
    query = TransferQuery.from_wire(parse_json_object(request))
    app.services.peer(query.peer)                 # 404 now rather than a failed job later
    job = app.engine.submit(PULL_JOB_TYPE, query.to_wire(), query.priority)
    return Response.json({"ID": job.id, "Path": f"/jobs/{job.id}"})


ROUTES = [
    Route("/transfers/pull", {"POST": post_pull}),
]
