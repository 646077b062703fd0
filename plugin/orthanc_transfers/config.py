"""Configuration: the ``Transfers`` section and the ``OrthancPeers`` entries.

Everything is parsed once into frozen values; nothing else in the package reads the
raw configuration. Option names and defaults of the original C++ plugin are kept
(reference §2.1); options that are new here are marked *new*.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest, UnknownResource

#: Worker threads per job; also the number of chunk requests served at once.
DEFAULT_THREADS = 4
#: Target bucket size, in KiB (4 MiB).
DEFAULT_BUCKET_SIZE_KB = 4096
#: Source-side cache of whole DICOM files, in MiB.
DEFAULT_CACHE_SIZE_MB = 512
#: Push transactions a receiver holds at once.
DEFAULT_MAX_PUSH_TRANSACTIONS = 4
#: Extra attempts after a failed HTTP request (0 = try once).
DEFAULT_MAX_HTTP_RETRIES = 0
#: Timeout of the ``GET /plugins`` probe of ``/transfers/peers``, in seconds.
DEFAULT_PEER_CONNECTIVITY_TIMEOUT = 2
#: Timeout of push creation and commit, in seconds.
DEFAULT_PEER_COMMIT_TIMEOUT = 600
#: Threads importing received files into Orthanc.
DEFAULT_COMMIT_THREADS_COUNT = 1
#: *new*: first pause before a retry, in seconds; doubles at each retry.
DEFAULT_HTTP_RETRY_BACKOFF = 1.0
#: *new*: longest pause between two retries, in seconds.
DEFAULT_HTTP_RETRY_BACKOFF_MAX = 30.0
#: *new*: idle push transactions are discarded after this many seconds.
DEFAULT_PUSH_TRANSACTION_TIMEOUT = 3600
#: *new*: finished transfer jobs kept in the history (Orthanc's JobsHistorySize).
DEFAULT_JOBS_HISTORY_SIZE = 10
#: *new*: transfer jobs running at once (Orthanc's ConcurrentJobs).
DEFAULT_CONCURRENT_JOBS = 2
#: *new*: refuse a declared instance larger than this, in MiB (push and pull).
DEFAULT_MAX_INSTANCE_SIZE_MB = 4096
#: *new*: zlib level of gzip buckets (1 fastest ... 9 smallest; the original uses 6).
DEFAULT_GZIP_LEVEL = 1
#: Orthanc's global ``HttpTimeout``, in seconds, used for every other peer call.
DEFAULT_HTTP_TIMEOUT = 60

_UNSIGNED_OPTIONS = {
    "Threads": DEFAULT_THREADS,
    "BucketSize": DEFAULT_BUCKET_SIZE_KB,
    "CacheSize": DEFAULT_CACHE_SIZE_MB,
    "MaxPushTransactions": DEFAULT_MAX_PUSH_TRANSACTIONS,
    "MaxHttpRetries": DEFAULT_MAX_HTTP_RETRIES,
    "PeerConnectivityTimeout": DEFAULT_PEER_CONNECTIVITY_TIMEOUT,
    "PeerCommitTimeout": DEFAULT_PEER_COMMIT_TIMEOUT,
    "CommitThreadsCount": DEFAULT_COMMIT_THREADS_COUNT,
    "PushTransactionTimeout": DEFAULT_PUSH_TRANSACTION_TIMEOUT,
    "MaxInstanceSize": DEFAULT_MAX_INSTANCE_SIZE_MB,
    "GzipLevel": DEFAULT_GZIP_LEVEL,
}
# The original refuses to start with these at 0 (reference §2.1); so do we, and
# Threads too, since 0 threads would make every job hang.
_POSITIVE_OPTIONS = {"Threads", "BucketSize", "CacheSize", "MaxPushTransactions",
                     "CommitThreadsCount", "MaxInstanceSize", "GzipLevel"}


class ConfigurationError(ValueError):
    """A configuration value that the plugin cannot run with; names the option."""


@dataclass(frozen=True)
class TransfersConfig:
    threads: int = DEFAULT_THREADS
    bucket_size: int = DEFAULT_BUCKET_SIZE_KB * 1024            # bytes
    cache_size: int = DEFAULT_CACHE_SIZE_MB * 1024 * 1024       # bytes
    max_push_transactions: int = DEFAULT_MAX_PUSH_TRANSACTIONS
    max_http_retries: int = DEFAULT_MAX_HTTP_RETRIES
    peer_connectivity_timeout: float = DEFAULT_PEER_CONNECTIVITY_TIMEOUT
    peer_commit_timeout: float = DEFAULT_PEER_COMMIT_TIMEOUT
    commit_threads_count: int = DEFAULT_COMMIT_THREADS_COUNT
    http_retry_backoff: float = DEFAULT_HTTP_RETRY_BACKOFF
    http_retry_backoff_max: float = DEFAULT_HTTP_RETRY_BACKOFF_MAX
    push_transaction_timeout: float = DEFAULT_PUSH_TRANSACTION_TIMEOUT
    max_instance_size: int = DEFAULT_MAX_INSTANCE_SIZE_MB * 1024 * 1024  # bytes
    gzip_level: int = DEFAULT_GZIP_LEVEL
    staging_directory: str = ""
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    jobs_history_size: int = DEFAULT_JOBS_HISTORY_SIZE
    concurrent_jobs: int = DEFAULT_CONCURRENT_JOBS
    restrict_chunks_to_transfers: bool = False
    import_through_http: bool | None = None     # None: through HTTP unless AllowThreads
    import_during_transfer: bool = False
    skip_stored_instances: bool = False
    https_verify_peers: bool = True
    https_ca_certificates: str = ""

    def imports_during_transfer(self, requested: bool | None) -> bool:
        """A transfer's ``ImportDuringTransfer``: its request's, else this option."""
        return self.import_during_transfer if requested is None else requested

    def skips_stored_instances(self, requested: bool | None) -> bool:
        """A pull's ``SkipStoredInstances``: its request's, else this option."""
        return self.skip_stored_instances if requested is None else requested

    def describe(self) -> dict[str, Any]:
        """The effective settings, under their option names, for the start-up log."""
        return {
            "Threads": self.threads,
            "BucketSize": self.bucket_size // 1024,
            "CacheSize": self.cache_size // (1024 * 1024),
            "MaxPushTransactions": self.max_push_transactions,
            "MaxHttpRetries": self.max_http_retries,
            "PeerConnectivityTimeout": self.peer_connectivity_timeout,
            "PeerCommitTimeout": self.peer_commit_timeout,
            "CommitThreadsCount": self.commit_threads_count,
            "HttpRetryBackoff": self.http_retry_backoff,
            "PushTransactionTimeout": self.push_transaction_timeout,
            "MaxInstanceSize": self.max_instance_size // (1024 * 1024),
            "GzipLevel": self.gzip_level,
            "StagingDirectory": self.staging_directory,
            "HttpTimeout": self.http_timeout,
            "RestrictChunksToTransfers": self.restrict_chunks_to_transfers,
            "ImportThroughHttp": "auto" if self.import_through_http is None
            else self.import_through_http,
            "ImportDuringTransfer": self.import_during_transfer,
            "SkipStoredInstances": self.skip_stored_instances,
            "ConcurrentJobs": self.concurrent_jobs,
            "JobsHistorySize": self.jobs_history_size,
        }


def _unsigned(section: dict[str, Any], name: str, default: int) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"Transfers.{name} must be an unsigned integer, got {value!r}")
    if name in _POSITIVE_OPTIONS and value == 0:
        raise ConfigurationError(f"Transfers.{name} must be greater than 0")
    return value


def _number(section: dict[str, Any], name: str, default: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"Transfers.{name} must be a non-negative number, got {value!r}")
    return float(value)


def _boolean(section: dict[str, Any], name: str, default: bool) -> bool:
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"Transfers.{name} must be true or false, got {value!r}")
    return value


def _global_number(configuration: dict[str, Any], name: str, default: float) -> float:
    """One of Orthanc's own options that we follow (HttpTimeout, ConcurrentJobs...)."""
    value = configuration.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def parse_transfers_config(configuration: dict[str, Any]) -> TransfersConfig:
    """Build the effective settings from Orthanc's whole configuration."""
    section = configuration.get("Transfers", {})
    if not isinstance(section, dict):
        raise ConfigurationError("the Transfers section must be a JSON object")
    values = {name: _unsigned(section, name, default)
              for name, default in _UNSIGNED_OPTIONS.items()}
    staging = section.get("StagingDirectory")
    if staging is None:
        storage = configuration.get("StorageDirectory", "OrthancStorage")
        staging = os.path.join(str(storage), "transfers-staging")
    if not isinstance(staging, str) or not staging:
        raise ConfigurationError("Transfers.StagingDirectory must be a non-empty string")
    restrict = _boolean(section, "RestrictChunksToTransfers", False)
    http_timeout = _global_number(configuration, "HttpTimeout", DEFAULT_HTTP_TIMEOUT)
    return TransfersConfig(
        threads=values["Threads"],
        bucket_size=values["BucketSize"] * 1024,
        cache_size=values["CacheSize"] * 1024 * 1024,
        max_push_transactions=values["MaxPushTransactions"],
        max_http_retries=values["MaxHttpRetries"],
        peer_connectivity_timeout=values["PeerConnectivityTimeout"],
        peer_commit_timeout=values["PeerCommitTimeout"],
        commit_threads_count=values["CommitThreadsCount"],
        http_retry_backoff=_number(section, "HttpRetryBackoff", DEFAULT_HTTP_RETRY_BACKOFF),
        http_retry_backoff_max=_number(section, "HttpRetryBackoffMax",
                                       DEFAULT_HTTP_RETRY_BACKOFF_MAX),
        push_transaction_timeout=values["PushTransactionTimeout"],
        max_instance_size=values["MaxInstanceSize"] * 1024 * 1024,
        gzip_level=min(9, values["GzipLevel"]),
        staging_directory=os.path.abspath(staging),
        restrict_chunks_to_transfers=restrict,
        import_through_http=_boolean(section, "ImportThroughHttp", True)
        if "ImportThroughHttp" in section else None,
        import_during_transfer=_boolean(section, "ImportDuringTransfer", False),
        skip_stored_instances=_boolean(section, "SkipStoredInstances", False),
        # Orthanc's HttpTimeout of 0 means "no timeout"; urllib3 wants None for that.
        http_timeout=http_timeout,
        jobs_history_size=int(_global_number(configuration, "JobsHistorySize",
                                             DEFAULT_JOBS_HISTORY_SIZE)),
        concurrent_jobs=max(1, int(_global_number(configuration, "ConcurrentJobs",
                                                  DEFAULT_CONCURRENT_JOBS))),
        https_verify_peers=bool(configuration.get("HttpsVerifyPeers", True)),
        https_ca_certificates=str(configuration.get("HttpsCACertificates", "") or ""),
    )


@dataclass(frozen=True)
class PeerConfig:
    """One entry of Orthanc's ``OrthancPeers``, in either of its two forms."""

    name: str
    url: str                                  # always ends with "/"
    username: str | None = None
    password: str | None = None
    http_headers: dict[str, str] = field(default_factory=dict)
    remote_self: str | None = None
    certificate_file: str | None = None
    certificate_key_file: str | None = None
    certificate_key_password: str | None = None
    timeout: float | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return (self.username, self.password or "")


def _optional_str(entry: dict[str, Any], key: str, peer: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"OrthancPeers.{peer}.{key} must be a string")
    return value


def parse_peer(name: str, entry: Any) -> PeerConfig:
    """One peer from ``[url, user, password]`` or ``{"Url": ..., ...}``."""
    if isinstance(entry, list):
        if not entry or not all(isinstance(x, str) for x in entry):
            raise ConfigurationError(f"OrthancPeers.{name} must be [url, user, password]")
        entry = {"Url": entry[0], "Username": entry[1] if len(entry) > 1 else None,
                 "Password": entry[2] if len(entry) > 2 else None}
    if not isinstance(entry, dict) or not isinstance(entry.get("Url"), str):
        raise ConfigurationError(f"OrthancPeers.{name} has no Url")
    url = entry["Url"] if entry["Url"].endswith("/") else entry["Url"] + "/"
    headers = entry.get("HttpHeaders") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigurationError(f"OrthancPeers.{name}.HttpHeaders must map names to strings")
    timeout = entry.get("Timeout")
    return PeerConfig(
        name=name,
        url=url,
        username=_optional_str(entry, "Username", name),
        password=_optional_str(entry, "Password", name),
        http_headers=dict(headers),
        remote_self=_optional_str(entry, "RemoteSelf", name),
        certificate_file=_optional_str(entry, "CertificateFile", name),
        certificate_key_file=_optional_str(entry, "CertificateKeyFile", name),
        certificate_key_password=_optional_str(entry, "CertificateKeyPassword", name),
        timeout=float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None,
    )


def parse_peers(configuration: dict[str, Any]) -> dict[str, PeerConfig]:
    """Every usable peer, by name; a malformed entry is left out (and logged by the caller)."""
    peers: dict[str, PeerConfig] = {}
    section = configuration.get("OrthancPeers", {})
    if isinstance(section, dict):
        for name, entry in section.items():
            try:
                peers[name] = parse_peer(name, entry)
            except ConfigurationError:
                continue
    return peers


def find_peer(configuration: dict[str, Any], name: Any) -> PeerConfig:
    """The peer called ``name``, or a 404 naming it."""
    if not isinstance(name, str) or not name:
        raise BadRequest("'Peer' must be a non-empty string")
    peers = parse_peers(configuration)
    if name not in peers:
        known = ", ".join(sorted(peers)) or "none"
        raise UnknownResource(f"Unknown peer: {name!r} (known peers: {known})")
    return peers[name]
