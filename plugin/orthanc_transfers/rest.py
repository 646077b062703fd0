"""REST handlers of the read-side routes, and the table of every route.

Handlers are small: parse, call the core, answer (errors are mapped in
``routing.guarded``). Each gets only what its route carries (:class:`SourceApi` here,
``JobsApi``, ``StartingApi``, ``ReceivingApi`` in the other modules); the assembly builds
those and :func:`routes` lists every route in URL order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from .hostapi import Handler, Host, Request, Response
from .peers import PLUGIN_NAME, probe_peers
from .protocol import lookup_answer, parse_chunk_request, parse_resources
from .routing import Route, guarded, parse_json_body
from .services import Services
from .source import Announcements

PLUGIN_DESCRIPTION = "Accelerates transfers and provides storage commitment between Orthanc peers"


# -- read side (source of pull transfers) -------------------------------------------------


@dataclass(frozen=True)
class SourceApi:
    """What the read side uses: the instances, peers, settings, and what was announced."""
    services: Services
    announcements: Announcements


def get_peers(api: SourceApi, request: Request) -> Response:
    services = api.services
    peers = list(parse_peers(services.host.configuration()).values())
    statuses = probe_peers(peers, services.client, services.config.peer_connectivity_timeout)
    return Response.json(statuses)


def post_lookup(api: SourceApi, request: Request) -> Response:
    body = parse_json_body(request)
    if not isinstance(body, list):
        raise BadRequest("the body of /transfers/lookup must be a bare JSON array of "
                         "{\"Level\", \"ID\"} objects")
    resources = parse_resources(body, "body")
    services = api.services
    instances = services.source.describe_all(services.source.expand(resources))
    api.announcements.announce(info.id for info in instances)
    services.prefetch_first(instances)
    return Response.json(lookup_answer(instances, services.originator), pretty=False)


def get_chunks(api: SourceApi, request: Request) -> Response:
    chunk = parse_chunk_request(request.groups[0], request.args)
    services = api.services
    if services.config.restrict_chunks_to_transfers:
        api.announcements.check(chunk.instance_ids)
    encoding = chunk.encoding
    received = time.perf_counter()
    throttles = services.throttles
    with throttles.chunk_slots:
        data = services.source.read_range(chunk.instance_ids, chunk.offset, chunk.size)
        # A receiver of ours accepts plain bytes for data that does not compress.
        if ADAPTIVE_HEADER.lower() in request.headers:
            encoding = adapt(encoding, data)
        started = time.thread_time()      # CPU time: a wait for a free core is not speed
        level = chunk.level if chunk.level is not None else \
            services.config.gzip_level if encoding is Encoding.GZIP else 3
        with throttles.encoders:
            payload = encode(data, encoding, level)
        seconds = time.thread_time() - started
    services.metrics.add("chunks_served_bytes", len(payload))
    services.metrics.add("chunks_served_count")
    services.publish_cache_metrics()
    return Response(body=payload, content_type=encoding.mime_type,
                    headers={ENCODING_HEADER: encoding.value,
                             ENCODE_SECONDS_HEADER: f"{seconds:.6f}",
                             **server_seconds_header(received)})


# -- /plugins: make original peers see "transfers" ----------------------------------------


def get_plugins(host: Host, request: Request) -> Response:
    plugins = json.loads(host.rest_get("/plugins"))
    if PLUGIN_NAME not in plugins:
        plugins.append(PLUGIN_NAME)
    return Response.json(plugins)


def get_plugin_description(host: Host, request: Request) -> Response:
    return Response.json({"ID": PLUGIN_NAME, "Version": __version__,
                          "Description": PLUGIN_DESCRIPTION,
                          "ExtendsOrthancExplorer": True})


def routes(source: SourceApi, jobs: rest_jobs.JobsApi, starting: rest_transfers.StartingApi,
           receiving: rest_transfers.ReceivingApi) -> list[Route[Any]]:
    host = source.services.host
    return [
        Route("/plugins", host, {"GET": get_plugins}),
        Route("/plugins/transfers", host, {"GET": get_plugin_description}),
        *rest_jobs.routes(jobs),
        Route("/transfers/chunks/([.0-9a-f-]+)", source, {"GET": get_chunks}),
        Route("/transfers/lookup", source, {"POST": post_lookup}),
        Route("/transfers/peers", source, {"GET": get_peers}),
        *rest_transfers.routes(starting, receiving),
    ]


def register_routes(register: Callable[[str, Handler], None], table: list[Route[Any]],
                    log_error: Callable[[str], None]) -> None:
    for route in table:
        register(route.regex, guarded(route, log_error))
