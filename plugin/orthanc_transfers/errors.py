"""Every error of the plugin, how each one looks on the wire, and the stop signals.

The tree of errors (``retryable``: whether sending the same request again may help)::

    TransfersError                  500, root: carries an HTTP status and a JSON body
    ├── BadRequest                  400, the caller sent something malformed
    │   └── UnsupportedEncoding     an encoding this Orthanc cannot decode or encode
    ├── ConfigurationError          500, a Transfers option or a peer is malformed
    ├── Forbidden                   403, refused by a security option
    ├── UnknownResource             404, no such peer, resource, job or transaction
    ├── Conflict                    409, the request is valid but not now
    │   └── InvalidTransition       409, a job action that its state does not allow
    ├── ServiceUnavailable          503, e.g. every push slot is busy
    ├── PeerError                   502, a remote Orthanc misbehaved       retryable
    │   ├── PeerUnreachable         connection refused, reset or timed out retryable
    │   ├── PeerCertificateRefused  its TLS certificate failed verification
    │   ├── PeerHttpError           a non-200 status            retryable on 5xx/408/429
    │   │   └── PeerCorruption      400: the peer received our bytes damaged
    │   └── PeerProtocolError       a 200 answer with something unusable   retryable
    ├── IntegrityError              400, bytes that do not match their size or MD5
    │   │                                                                  retryable
    │   └── RepeatedCorruption      409, one instance failed its MD5 MAX_MD5_FAILURES times
    ├── StagingError                500, the staging area cannot be written
    └── RetriesExhausted            the last error after every retry (``from`` it)

The stop signals are not errors: a job was told to stop, nothing went wrong. They have
their own root, so that ``except TransfersError`` never catches one by accident::

    StopSignal
    ├── Paused                      keep what was done; resume continues
    └── Cancelled                   the job fails with "canceled"; resubmit continues
        └── Interrupted             Orthanc is stopping: run again at the next start
            └── HostClosed          a call into Orthanc after it began to stop

The JSON body uses the keys of Orthanc's own error answers (``HttpStatus``,
``Message``, ``Details``, ``OrthancStatus``...), which is what
python-orthanc-api-client and Orthanc Explorer read.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

#: Orthanc's ``ErrorCode`` values that we report (Orthanc SDK enumeration).
ORTHANC_INTERNAL_ERROR = -1
ORTHANC_PLUGIN_ERROR = 1
ORTHANC_BAD_REQUEST = 8
ORTHANC_NETWORK_PROTOCOL = 9
ORTHANC_CANNOT_WRITE_FILE = 14
ORTHANC_BAD_FILE_FORMAT = 15
ORTHANC_UNKNOWN_RESOURCE = 17
ORTHANC_CORRUPTED_FILE = 20
ORTHANC_BAD_SEQUENCE_OF_CALLS = 6
ORTHANC_UNAUTHORIZED = 29
ORTHANC_CANCELED_JOB = 37

_HTTP_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class TransfersError(Exception):
    """Root of the plugin's errors: a message for humans, a status for HTTP."""

    http_status: int = 500             # an instance may narrow it (RetriesExhausted)
    orthanc_code: ClassVar[int] = ORTHANC_PLUGIN_ERROR
    #: Whether the same request, sent again, may succeed (read by :mod:`.retry`).
    retryable: bool = False

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self, method: str = "", uri: str = "") -> dict[str, Any]:
        """The answer body, shaped like Orthanc's own error objects."""
        body: dict[str, Any] = {
            "HttpError": _HTTP_REASONS.get(self.http_status, "Error"),
            "HttpStatus": self.http_status,
            "Message": self.message,
            "Details": self.details or self.message,
            "OrthancError": self.message,
            "OrthancStatus": self.orthanc_code,
        }
        if method:
            body["Method"] = method
        if uri:
            body["Uri"] = uri
        return body

    def to_body(self, method: str = "", uri: str = "") -> str:
        return json.dumps(self.to_json(method, uri), indent=3)


class BadRequest(TransfersError):
    http_status = 400
    orthanc_code = ORTHANC_BAD_REQUEST


class UnsupportedEncoding(BadRequest):
    """An encoding that needs a module this Orthanc lacks (zstd: python3-zstandard).

    Peers are only sent what they announce, so this means a sender that ignored it.
    """

    def __init__(self, encoding: str) -> None:
        super().__init__(f"Encoding {encoding!r} is not available on this Orthanc "
                         "(it needs python3-zstandard)")


class ConfigurationError(TransfersError, ValueError):
    """A ``Transfers`` option or an ``OrthancPeers`` entry that cannot be used."""


class Forbidden(TransfersError):
    http_status = 403
    orthanc_code = ORTHANC_UNAUTHORIZED


class UnknownResource(TransfersError):
    http_status = 404
    orthanc_code = ORTHANC_UNKNOWN_RESOURCE


class Conflict(TransfersError):
    http_status = 409
    orthanc_code = ORTHANC_BAD_SEQUENCE_OF_CALLS


class InvalidTransition(Conflict):
    """A job action that the job's current state does not allow."""


class ServiceUnavailable(TransfersError):
    http_status = 503


class PeerError(TransfersError):
    """A remote Orthanc did not do what we asked; ``uri`` says which call."""

    http_status = 502
    orthanc_code = ORTHANC_NETWORK_PROTOCOL
    retryable = True

    def __init__(self, message: str, *, peer: str = "", uri: str = "",
                 status: int | None = None, details: str = "") -> None:
        super().__init__(message, details)
        self.peer = peer
        self.uri = uri
        self.status = status


class PeerUnreachable(PeerError):
    """The request never got an HTTP answer: refused, reset or timed out."""


class PeerCertificateRefused(PeerError):
    """The peer's TLS certificate failed verification: a configuration to fix, which no
    retry and no wait for the peer will change."""

    retryable = False


class PeerHttpError(PeerError):
    """The peer answered with a status other than 200."""

    def __init__(self, message: str, *, peer: str = "", uri: str = "",
                 status: int | None = None, details: str = "") -> None:
        super().__init__(message, peer=peer, uri=uri, status=status, details=details)
        # 4xx other than timeouts and throttling mean the request itself is wrong; a
        # subclass that is never retryable (PeerCorruption) stays so whatever the status.
        self.retryable = type(self).retryable and (
            status is None or status >= 500 or status in (408, 429))


class PeerCorruption(PeerHttpError):
    """The peer says that the bytes we sent arrived damaged (an :class:`IntegrityError`
    on its side: HTTP 400 with ``OrthancStatus`` 20). It forgot every bucket of that
    instance, so repeating this one request is not the fix: the sender asks what the
    peer still holds and sends the rest (push's completion rounds)."""

    retryable = False


class PeerProtocolError(PeerError):
    """A 200 answer whose content is not what the protocol says (retryable: a proxy
    may have cut or replaced one answer)."""


class IntegrityError(TransfersError):
    """Bytes whose length or MD5 differ from what was announced.

    Answered 400 on the receiving routes: the sender's bytes are wrong, and sending
    them again is the fix (the original answers 500 there).
    """

    http_status = 400
    orthanc_code = ORTHANC_CORRUPTED_FILE
    retryable = True           # a bucket damaged on the way is worth another download

    def __init__(self, message: str, *, instance: str = "", details: str = "") -> None:
        super().__init__(message, details)
        self.instance = instance


class RepeatedCorruption(IntegrityError):
    """One instance failed its MD5 check too often: the source itself is damaged, or the
    link corrupts it every time. 409, so that a push sender stops resending it."""

    http_status = 409
    retryable = False


class StagingError(TransfersError):
    orthanc_code = ORTHANC_CANNOT_WRITE_FILE


class RetriesExhausted(TransfersError):
    """Raised ``from`` the last error once a retry policy has no attempt left."""

    orthanc_code = ORTHANC_NETWORK_PROTOCOL

    def __init__(self, message: str, last: BaseException, history: tuple[str, ...]) -> None:
        super().__init__(message, "; ".join(history))
        self.last = last
        self.history = history
        # Answered as the last error would be: a peer that kept failing is a 502.
        if isinstance(last, TransfersError):
            self.http_status = last.http_status


def last_error(error: BaseException) -> BaseException:
    """What actually went wrong: the last attempt's error of exhausted retries."""
    return error.last if isinstance(error, RetriesExhausted) else error


class StopSignal(Exception):
    """A job was told to stop (by a user or by Orthanc stopping); not a failure."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Paused(StopSignal):
    """A job was paused; it keeps what it has done."""


class Cancelled(StopSignal):
    """A job was cancelled (by a user or by Orthanc stopping)."""


class Interrupted(Cancelled):
    """Orthanc is stopping: the job runs again at the next start."""


class HostClosed(Interrupted):
    """Orthanc is stopping: no more calls into it."""
