"""Routing plumbing shared by the REST modules: the route value, JSON bodies, errors.

A :class:`Route` carries the narrow value its handlers need (its ``context``: the
receiver, the engine...), never the whole application; handlers are
``handler(context, request)``. :func:`guarded` is the one place where errors become
answers: a :class:`TransfersError` gives its own status and Orthanc-style JSON; anything
else is logged and answered as a 500 JSON, never a traceback.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import BadRequest, ServiceUnavailable, StopSignal, TransfersError
from .hostapi import Handler, Request, Response

Context = TypeVar("Context")


#: Deepest JSON nesting accepted. Orthanc's HTTP threads have small stacks: a body
#: nested some 500 levels deep overflows them inside ``json.loads`` and kills Orthanc
#: before Python's recursion limit can help.
MAX_JSON_DEPTH = 32
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def json_depth(body: bytes) -> int:
    """Nesting depth of a JSON text, without parsing it (strings are skipped)."""
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json_body(request: Request) -> Any:
    if not request.body:
        raise BadRequest("the request body is empty; a JSON body is expected")
    if json_depth(request.body) > MAX_JSON_DEPTH:
        raise BadRequest(f"the request body nests JSON deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None


def parse_json_object(request: Request) -> dict[str, Any]:
    body = parse_json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


@dataclass(frozen=True)
class Route(Generic[Context]):
    regex: str
    context: Context
    methods: dict[str, Callable[[Context, Request], Response]]


def guarded(route: Route[Any], log_error: Callable[[str], None]) -> Handler:
    """The handler Orthanc calls: method check, then the mapping of every error."""
    allowed = ",".join(route.methods)

    def handle(request: Request) -> Response:
        handler = route.methods.get(request.method)
        if handler is None:
            return Response(status=405, allowed_method=allowed)
        try:
            return handler(route.context, request)
        except TransfersError as e:
            return Response(status=e.http_status, body=e.to_body(request.method, request.uri))
        except StopSignal as e:         # Orthanc began to stop while this request ran
            stopping = ServiceUnavailable(f"Orthanc is stopping: {e.message}")
            return Response(status=503, body=stopping.to_body(request.method, request.uri))
        except Exception as e:
            log_error(f"Transfers: unexpected error on {request.method} {request.uri}: "
                      f"{traceback.format_exc()}")
            error = TransfersError("Internal error in the transfers plugin",
                                   f"{type(e).__name__}: {e}")
            return Response(status=500, body=error.to_body(request.method, request.uri))

    return handle
