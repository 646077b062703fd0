"""Every error class: its HTTP status, its Orthanc code and its JSON body."""

from __future__ import annotations

import json

import pytest
from orthanc_transfers import errors
from orthanc_transfers.errors import (
    BadRequest,
    Cancelled,
    ConfigurationError,
    Conflict,
    Forbidden,
    HostClosed,
    IntegrityError,
    Interrupted,
    InvalidTransition,
    Paused,
    PeerCorruption,
    PeerError,
    PeerHttpError,
    PeerProtocolError,
    PeerUnreachable,
    RepeatedCorruption,
    RetriesExhausted,
    ServiceUnavailable,
    StagingError,
    StopSignal,
    TransfersError,
    UnknownResource,
)

# class, HTTP status, Orthanc error code, HttpError reason
TABLE: list[tuple[type[TransfersError], int, int, str]] = [
    (TransfersError, 500, errors.ORTHANC_PLUGIN_ERROR, "Internal Server Error"),
    (BadRequest, 400, errors.ORTHANC_BAD_REQUEST, "Bad Request"),
    (UnknownResource, 404, errors.ORTHANC_UNKNOWN_RESOURCE, "Not Found"),
    (Conflict, 409, errors.ORTHANC_BAD_SEQUENCE_OF_CALLS, "Conflict"),
    (InvalidTransition, 409, errors.ORTHANC_BAD_SEQUENCE_OF_CALLS, "Conflict"),
    (ServiceUnavailable, 503, errors.ORTHANC_PLUGIN_ERROR, "Service Unavailable"),
    (PeerError, 502, errors.ORTHANC_NETWORK_PROTOCOL, "Bad Gateway"),
    (PeerUnreachable, 502, errors.ORTHANC_NETWORK_PROTOCOL, "Bad Gateway"),
    (PeerHttpError, 502, errors.ORTHANC_NETWORK_PROTOCOL, "Bad Gateway"),
    (PeerProtocolError, 502, errors.ORTHANC_NETWORK_PROTOCOL, "Bad Gateway"),
    (IntegrityError, 400, errors.ORTHANC_CORRUPTED_FILE, "Bad Request"),
    (StagingError, 500, errors.ORTHANC_CANNOT_WRITE_FILE, "Internal Server Error"),
    (ConfigurationError, 500, errors.ORTHANC_PLUGIN_ERROR, "Internal Server Error"),
    (PeerCorruption, 502, errors.ORTHANC_NETWORK_PROTOCOL, "Bad Gateway"),
    (RepeatedCorruption, 409, errors.ORTHANC_CORRUPTED_FILE, "Conflict"),
    (Forbidden, 403, errors.ORTHANC_UNAUTHORIZED, "Forbidden"),
]


@pytest.mark.parametrize(("cls", "status", "code", "reason"), TABLE,
                         ids=[row[0].__name__ for row in TABLE])
def test_status_code_and_body(cls: type[TransfersError], status: int, code: int,
                              reason: str) -> None:
    error = cls("Something happened")
    assert isinstance(error, TransfersError)
    assert error.http_status == status
    assert error.orthanc_code == code
    body = error.to_json("POST", "/transfers/push")
    assert body["HttpStatus"] == status
    assert body["HttpError"] == reason
    assert body["OrthancStatus"] == code
    assert body["Message"] == "Something happened"
    assert body["Details"] == "Something happened"          # no details: the message
    assert (body["Method"], body["Uri"]) == ("POST", "/transfers/push")


def test_retries_exhausted() -> None:
    last = PeerUnreachable("refused")
    error = RetriesExhausted("gave up", last, ("attempt 1: refused", "attempt 2: refused"))
    # Answered as its last error: a peer that kept failing is a bad gateway.
    assert (error.http_status, error.orthanc_code) == (502, errors.ORTHANC_NETWORK_PROTOCOL)
    assert RetriesExhausted("gave up", ValueError("odd"), ()).http_status == 500
    assert error.details == "attempt 1: refused; attempt 2: refused"
    assert error.to_json()["Details"] == error.details
    assert error.last is last


def test_details_and_optional_keys() -> None:
    body = BadRequest("Bad body", "field X").to_json()
    assert body["Details"] == "field X"
    assert "Method" not in body and "Uri" not in body
    assert {"HttpStatus", "Message", "Details", "HttpError", "OrthancStatus"} <= set(body)


def test_to_body_is_json() -> None:
    text = UnknownResource("Unknown peer: x").to_body("GET", "/transfers/peers")
    assert json.loads(text)["Message"] == "Unknown peer: x"


def test_hierarchy() -> None:
    assert issubclass(InvalidTransition, Conflict)
    assert issubclass(PeerCorruption, PeerHttpError)
    assert issubclass(RepeatedCorruption, IntegrityError)
    assert issubclass(ConfigurationError, ValueError)      # what json/config callers catch
    assert all(issubclass(c, PeerError)
               for c in (PeerUnreachable, PeerHttpError, PeerProtocolError))
    assert str(BadRequest("text")) == "text"


def test_peer_error_context() -> None:
    error = PeerHttpError("HTTP 503", peer="remote", uri="/transfers/lookup", status=503,
                          details="body")
    assert (error.peer, error.uri, error.status, error.details) == (
        "remote", "/transfers/lookup", 503, "body")
    assert IntegrityError("bad md5", instance="i1").instance == "i1"


@pytest.mark.parametrize(("status", "retryable"), [
    (None, True), (400, False), (401, False), (403, False), (404, False), (405, False),
    (408, True), (409, False), (413, False), (429, True), (500, True), (502, True),
    (503, True), (504, True),
])
def test_peer_http_error_retryable(status: int | None, retryable: bool) -> None:
    assert PeerHttpError("x", status=status).retryable is retryable


@pytest.mark.parametrize("cls", [PeerError, PeerUnreachable, PeerProtocolError])
def test_other_peer_errors_are_retryable(cls: type[PeerError]) -> None:
    assert cls("x").retryable


@pytest.mark.parametrize("cls", [Paused, Cancelled, Interrupted, HostClosed])
def test_stop_signals_are_not_errors(cls: type[StopSignal]) -> None:
    """A handler that catches TransfersError never swallows a pause or a cancel."""
    signal = cls("job paused")
    assert isinstance(signal, StopSignal) and not isinstance(signal, TransfersError)
    assert signal.message == "job paused"
    assert issubclass(HostClosed, Interrupted) and issubclass(Interrupted, Cancelled)


@pytest.mark.parametrize(("cls", "retryable"), [
    (TransfersError, False), (BadRequest, False), (StagingError, False),
    (IntegrityError, True), (RepeatedCorruption, False), (PeerCorruption, False),
    (ConfigurationError, False),
])
def test_retryable_is_a_class_attribute(cls: type[TransfersError], retryable: bool) -> None:
    assert cls.retryable is retryable


def test_a_corruption_is_never_retried_whatever_its_status() -> None:
    """The receiver forgot the instance: the completion round resends it, not a retry."""
    assert not PeerCorruption("x", status=None).retryable
    assert not PeerCorruption("x", status=400).retryable
    assert PeerHttpError("x", status=None).retryable
