"""REST handlers of the read-side routes, and the table of every route.

Handlers are small: parse, call the core, answer (errors are mapped in
``routing.guarded``). The table at the bottom lists every route in URL order.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from . import __version__, rest_jobs, rest_transfers
from .config import parse_peers
from .encoding import (
    ADAPTIVE_HEADER,
    ENCODE_SECONDS_HEADER,
    ENCODING_HEADER,
    Encoding,
    adapt,
    encode,
    server_seconds_header,
)
from .errors import BadRequest
from .hostapi import Request, Response
from .peers import PLUGIN_NAME, probe_peers
from .protocol import lookup_answer, parse_chunk_request, parse_resources
from .routing import Route, guarded, parse_json_body

if TYPE_CHECKING:
    from .app import TransfersApp

PLUGIN_DESCRIPTION = "Accelerates transfers and provides storage commitment between Orthanc peers"


# -- read side (source of pull transfers) -------------------------------------------------


def get_peers(app: TransfersApp, request: Request) -> Response:
    peers = list(parse_peers(app.host.configuration()).values())
    statuses = probe_peers(peers, app.client, app.config.peer_connectivity_timeout)
    return Response.json(statuses)


def post_lookup(app: TransfersApp, request: Request) -> Response:
    body = parse_json_body(request)
    if not isinstance(body, list):
        raise BadRequest("the body of /transfers/lookup must be a bare JSON array of "
                         "{\"Level\", \"ID\"} objects")
    resources = parse_resources(body, "body")
    instances = app.source.describe_all(app.source.expand(resources))
    app.announcements.announce(info.id for info in instances)
    app.services.prefetch_first(instances)
    return Response.json(lookup_answer(instances, app.originator), pretty=False)


def get_chunks(app: TransfersApp, request: Request) -> Response:
    chunk = parse_chunk_request(request.groups[0], request.args)
    if app.config.restrict_chunks_to_transfers:
        app.announcements.check(chunk.instance_ids)
    encoding = chunk.encoding
    received = time.perf_counter()
    throttles = app.services.throttles
    with throttles.chunk_slots:
        data = app.source.read_range(chunk.instance_ids, chunk.offset, chunk.size)
        # A receiver of ours accepts plain bytes for data that does not compress.
        if ADAPTIVE_HEADER.lower() in request.headers:
            encoding = adapt(encoding, data)
        started = time.thread_time()      # CPU time: a wait for a free core is not speed
        level = chunk.level if chunk.level is not None else \
            app.config.gzip_level if encoding is Encoding.GZIP else 3
        with throttles.encoders:
            payload = encode(data, encoding, level)
        seconds = time.thread_time() - started
    app.metrics.add("chunks_served_bytes", len(payload))
    app.metrics.add("chunks_served_count")
    app.services.publish_cache_metrics()
    return Response(body=payload, content_type=encoding.mime_type,
                    headers={ENCODING_HEADER: encoding.value,
                             ENCODE_SECONDS_HEADER: f"{seconds:.6f}",
                             **server_seconds_header(received)})


# -- /plugins: make original peers see "transfers" ----------------------------------------


def get_plugins(app: TransfersApp, request: Request) -> Response:
    plugins = json.loads(app.host.rest_get("/plugins"))
    if PLUGIN_NAME not in plugins:
        plugins.append(PLUGIN_NAME)
    return Response.json(plugins)


def get_plugin_description(app: TransfersApp, request: Request) -> Response:
    return Response.json({"ID": PLUGIN_NAME, "Version": __version__,
                          "Description": PLUGIN_DESCRIPTION,
                          "ExtendsOrthancExplorer": True})


def routes() -> list[Route]:
    return [
        Route("/plugins", {"GET": get_plugins}),
        Route("/plugins/transfers", {"GET": get_plugin_description}),
        *rest_jobs.ROUTES,
        Route("/transfers/chunks/([.0-9a-f-]+)", {"GET": get_chunks}),
        Route("/transfers/lookup", {"POST": post_lookup}),
        Route("/transfers/peers", {"GET": get_peers}),
        *rest_transfers.ROUTES,
    ]


def register_routes(app: TransfersApp) -> None:
    for route in routes():
        app.host.register_route(route.regex, guarded(app, route))
