"""The Transfers section and OrthancPeers entries (reference §2.1, §2.2)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from orthanc_transfers.config import (
    ConfigurationError,
    PeerConfig,
    TransfersConfig,
    find_peer,
    parse_peer,
    parse_peers,
    parse_transfers_config,
    peer_problems,
)
from orthanc_transfers.errors import BadRequest, UnknownResource

KIB, MIB = 1024, 1024 * 1024

# Reference §2.1: option, default as written in the configuration, effective value
# (MaxHttpRetries: 0 in the original; ours retries by default, see Unreliable links).
DEFAULTS = [
    ("Threads", 4, ("threads", 4)),
    ("BucketSize", 4096, ("bucket_size", 4096 * KIB)),
    ("CacheSize", 512, ("cache_size", 512 * MIB)),
    ("MaxPushTransactions", 4, ("max_push_transactions", 4)),
    ("MaxHttpRetries", 5, ("max_http_retries", 5)),
    ("OutageDeadline", 21600, ("outage_deadline", 21600)),
    ("PeerConnectivityTimeout", 2, ("peer_connectivity_timeout", 2)),
    ("PeerCommitTimeout", 600, ("peer_commit_timeout", 600)),
    ("CommitThreadsCount", 1, ("commit_threads_count", 1)),
]


@pytest.mark.parametrize("configuration", [{}, {"Transfers": {}}])
@pytest.mark.parametrize(("option", "written", "effective"), DEFAULTS,
                         ids=[row[0] for row in DEFAULTS])
def test_defaults(configuration: dict[str, Any], option: str, written: int,
                  effective: tuple[str, int]) -> None:
    config = parse_transfers_config(configuration)
    attribute, value = effective
    assert getattr(config, attribute) == value
    assert config.describe()[option] == written


def test_defaults_match_the_dataclass_defaults() -> None:
    parsed = parse_transfers_config({"StorageDirectory": "/db"})
    assert parsed == TransfersConfig(staging_directory="/db/transfers-staging")


def test_book_example_values() -> None:
    section = {"Threads": 6, "BucketSize": 4096, "CacheSize": 128, "MaxPushTransactions": 4,
               "MaxHttpRetries": 2, "PeerConnectivityTimeout": 3, "PeerCommitTimeout": 900,
               "CommitThreadsCount": 3}
    config = parse_transfers_config({"Transfers": section})
    assert (config.threads, config.cache_size, config.max_http_retries) == (6, 128 * MIB, 2)
    assert (config.peer_connectivity_timeout, config.peer_commit_timeout) == (3, 900)
    assert config.commit_threads_count == 3
    assert {k: config.describe()[k] for k in section} == section


ALL_OPTIONS = [row[0] for row in DEFAULTS]
FORBIDDEN_ZERO = ["Threads", "BucketSize", "CacheSize", "MaxPushTransactions",
                  "CommitThreadsCount"]
BAD_VALUES = [(option, value) for option in ALL_OPTIONS
              for value in (-1, "4", True, 1.5, None, [4])]
BAD_VALUES += [(option, 0) for option in FORBIDDEN_ZERO]
BAD_VALUES += [("HttpRetryBackoff", -1), ("HttpRetryBackoff", "1"),
               ("HttpRetryBackoffMax", False), ("ImportDuringTransfer", "true"),
               ("ImportDuringTransfer", 1), ("ImportThroughHttp", None),
               ("ImportThroughHttp", "yes"),
               ("SkipStoredInstances", "false"), ("SkipStoredInstances", 0)]


@pytest.mark.parametrize(("option", "value"), BAD_VALUES)
def test_bad_values_name_the_option(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        parse_transfers_config({"Transfers": {option: value}})


@pytest.mark.parametrize("option", ["MaxHttpRetries", "PeerConnectivityTimeout",
                                    "PeerCommitTimeout"])
def test_zero_is_allowed_where_the_original_allows_it(option: str) -> None:
    described = parse_transfers_config({"Transfers": {option: 0}}).describe()
    assert described[option] == 0


def test_transfers_section_must_be_an_object() -> None:
    with pytest.raises(ConfigurationError, match="Transfers"):
        parse_transfers_config({"Transfers": [1]})


def test_staging_directory_defaults_under_storage_directory() -> None:
    config = parse_transfers_config({"StorageDirectory": "/var/lib/orthanc/db"})
    assert config.staging_directory == "/var/lib/orthanc/db/transfers-staging"


def test_staging_directory_default_without_storage_directory() -> None:
    config = parse_transfers_config({})
    assert config.staging_directory == os.path.abspath("OrthancStorage/transfers-staging")


def test_staging_directory_explicit() -> None:
    config = parse_transfers_config({"StorageDirectory": "/db",
                                     "Transfers": {"StagingDirectory": "/fast/staging"}})
    assert config.staging_directory == "/fast/staging"


@pytest.mark.parametrize("value", ["", 3, ["/x"]])
def test_staging_directory_bad_values(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="StagingDirectory"):
        parse_transfers_config({"Transfers": {"StagingDirectory": value}})


@pytest.mark.parametrize(("option", "value"), [
    ("HttpTimeout", -1), ("HttpTimeout", "60"), ("ConcurrentJobs", True),
    ("JobsHistorySize", None)])
def test_bad_orthanc_values_name_the_option(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"^{option} must be a non-negative number"):
        parse_transfers_config({option: value})


def test_staging_directory_null_is_the_default() -> None:
    config = parse_transfers_config({"StorageDirectory": "/db",
                                     "Transfers": {"StagingDirectory": None}})
    assert config.staging_directory == "/db/transfers-staging"


def test_orthanc_global_options() -> None:
    config = parse_transfers_config({"HttpTimeout": 120, "JobsHistorySize": 3,
                                     "ConcurrentJobs": 0, "HttpsVerifyPeers": False})
    assert (config.http_timeout, config.jobs_history_size) == (120.0, 3)
    assert config.concurrent_jobs == 1
    assert config.https_verify_peers is False


# -- peers ----------------------------------------------------------------------------------

def test_peer_list_form() -> None:
    peer = parse_peer("remote", ["http://remote:8042", "alice", "secret"])
    assert peer == PeerConfig(name="remote", url="http://remote:8042/", username="alice",
                              password="secret")
    assert peer.auth == ("alice", "secret")


def test_peer_list_form_without_credentials() -> None:
    peer = parse_peer("remote", ["http://remote:8042/"])
    assert (peer.url, peer.auth, peer.remote_self) == ("http://remote:8042/", None, None)


def test_peer_object_form() -> None:
    entry = {"Url": "https://remote/orthanc", "Username": "alice", "Password": "secret",
             "HttpHeaders": {"Token": "t"}, "RemoteSelf": "local",
             "CertificateFile": "/c.pem", "CertificateKeyFile": "/k.pem",
             "CertificateKeyPassword": "pw", "Timeout": 30}
    peer = parse_peer("remote", entry)
    assert peer.url == "https://remote/orthanc/"
    assert peer.auth == ("alice", "secret")
    assert peer.http_headers == {"Token": "t"}
    assert peer.remote_self == "local"
    assert (peer.certificate_file, peer.certificate_key_file,
            peer.certificate_key_password) == ("/c.pem", "/k.pem", "pw")
    assert peer.timeout == 30.0


def test_peer_username_without_password() -> None:
    assert parse_peer("p", {"Url": "http://x", "Username": "u"}).auth == ("u", "")


@pytest.mark.parametrize("entry", [
    [], [5], "http://x", None, {"Username": "u"}, {"Url": 5},
    {"Url": "http://x", "HttpHeaders": ["a"]}, {"Url": "http://x", "HttpHeaders": {"a": 1}},
    {"Url": "http://x", "RemoteSelf": 3}, {"Url": "http://x", "Password": 3},
])
def test_bad_peer_entries(entry: Any) -> None:
    with pytest.raises(ConfigurationError, match="remote"):
        parse_peer("remote", entry)


PEERS_CONFIGURATION = {"OrthancPeers": {
    "simple": ["http://simple:8042"],
    "bidirectional": {"Url": "http://bi:8042", "RemoteSelf": "me"},
    "broken": {"Username": "nobody"},
}}


def test_parse_peers_skips_malformed_entries() -> None:
    assert sorted(parse_peers(PEERS_CONFIGURATION)) == ["bidirectional", "simple"]
    assert parse_peers({}) == {}
    assert parse_peers({"OrthancPeers": ["x"]}) == {}


def test_peer_problems_name_each_left_out_peer_and_why() -> None:
    problems = peer_problems(PEERS_CONFIGURATION)
    assert problems == ["OrthancPeers.broken has no Url: peer 'broken' left out"]


@pytest.mark.parametrize("configuration", [
    {}, {"OrthancPeers": {}}, {"OrthancPeers": {"simple": ["http://simple:8042"]}}])
def test_no_peer_problems_when_every_peer_parses(configuration: dict[str, Any]) -> None:
    assert peer_problems(configuration) == []


@pytest.mark.parametrize("entry", [
    [5], "http://x", None, {"Url": 5}, {"Url": "http://x", "HttpHeaders": {"a": 1}},
    {"Url": "http://x", "RemoteSelf": 3}])
def test_peer_problems_match_what_parse_peers_leaves_out(entry: Any) -> None:
    configuration = {"OrthancPeers": {"good": ["http://good"], "bad one": entry}}
    assert list(parse_peers(configuration)) == ["good"]
    [problem] = peer_problems(configuration)
    with pytest.raises(ConfigurationError) as caught:
        parse_peer("bad one", entry)
    assert problem.startswith(str(caught.value)) and "'bad one'" in problem


def test_peer_problems_when_orthanc_peers_is_not_an_object() -> None:
    [problem] = peer_problems({"OrthancPeers": [["http://x"]]})
    assert "OrthancPeers must be a JSON object" in problem


def test_find_peer() -> None:
    assert find_peer(PEERS_CONFIGURATION, "bidirectional").remote_self == "me"


def test_find_unknown_peer() -> None:
    with pytest.raises(UnknownResource, match="nowhere") as caught:
        find_peer(PEERS_CONFIGURATION, "nowhere")
    assert caught.value.http_status == 404
    with pytest.raises(UnknownResource):
        find_peer(PEERS_CONFIGURATION, "broken")


@pytest.mark.parametrize("name", [None, 3, "", ["simple"]])
def test_find_peer_bad_name(name: Any) -> None:
    with pytest.raises(BadRequest):
        find_peer(PEERS_CONFIGURATION, name)


def test_import_during_transfer_is_off_unless_asked() -> None:
    assert parse_transfers_config({}).import_during_transfer is False
    on = parse_transfers_config({"Transfers": {"ImportDuringTransfer": True}})
    assert on.import_during_transfer is True and on.describe()["ImportDuringTransfer"] is True


def test_import_through_http_is_auto_unless_set() -> None:
    assert parse_transfers_config({}).import_through_http is None
    assert parse_transfers_config({}).describe()["ImportThroughHttp"] == "auto"
    for value in (True, False):
        config = parse_transfers_config({"Transfers": {"ImportThroughHttp": value}})
        assert config.import_through_http is value


def test_skip_stored_instances_is_off_unless_asked() -> None:
    """Off by default: like the original, a pull transfers every requested instance."""
    default = parse_transfers_config({})
    assert default.skip_stored_instances is False
    assert default.skips_stored_instances(None) is False
    assert default.skips_stored_instances(True) is True
    on = parse_transfers_config({"Transfers": {"SkipStoredInstances": True}})
    assert on.describe()["SkipStoredInstances"] is True
    assert on.skips_stored_instances(None) is True and on.skips_stored_instances(False) is False
