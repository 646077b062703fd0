"""Configuration: the ``Transfers`` section and the ``OrthancPeers`` entries.

Everything is parsed once into frozen values; nothing else in the package reads the
raw configuration. Every option is one row of :data:`OPTIONS`, which drives parsing
(:func:`parse_transfers_config`), the start-up log (:meth:`TransfersConfig.describe`)
and the README's table (:func:`options_markdown`; regenerate it with
``PYTHONPATH=plugin python3 -m orthanc_transfers.config --markdown``). Option names and
defaults of the original C++ plugin are kept (reference §2.1).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest, ConfigurationError, UnknownResource

KIB, MIB = 1024, 1024 * 1024

#: Origins of an option: the C++ plugin's (same name, unit and default), ours (in the
#: ``Transfers`` section too), or Orthanc's own top-level option that the plugin follows.
ORIGINAL, NEW, ORTHANC = "original", "new", "Orthanc"
#: How ``describe()`` and the README show ``ImportThroughHttp`` when it is not set.
AUTO = "auto"


# -- what a value may be ---------------------------------------------------------------------
# Each parser gets the option's label ("Transfers.Threads", "HttpTimeout") for its message
# and the value as written; it returns the value in the option's unit (KiB, MiB, s...).

def _unsigned(label: str, value: Any) -> int:
    # bool is an int subclass: without this check, true would pass as 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{label} must be an unsigned integer, got {value!r}")
    return value


def _positive(label: str, value: Any) -> int:
    # The original refuses to start with BucketSize, CacheSize, MaxPushTransactions or
    # CommitThreadsCount at 0 (reference §2.1); so do we, and with Threads at 0 too,
    # since 0 threads would make every job hang.
    number = _unsigned(label, value)
    if number == 0:
        raise ConfigurationError(f"{label} must be greater than 0")
    return number


def _zlib_level(label: str, value: Any) -> int:
    return min(9, _positive(label, value))   # zlib has no level above 9


def _number(label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{label} must be a non-negative number, got {value!r}")
    return float(value)


def _boolean(label: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{label} must be true or false, got {value!r}")
    return value


def _directory(label: str, value: Any) -> str:
    if value is None:
        return ""                            # null: as if unset, the derived default
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{label} must be a non-empty string")
    return os.path.abspath(value)


@dataclass(frozen=True)
class Kind:
    """What values an option accepts: the parser, and how the README says it."""

    text: str
    parse: Callable[[str, Any], Any]


UNSIGNED = Kind("integer ≥ 0", _unsigned)
POSITIVE = Kind("integer ≥ 1", _positive)
ZLIB_LEVEL = Kind("integer ≥ 1 (above 9: 9)", _zlib_level)
NUMBER = Kind("number ≥ 0", _number)
BOOLEAN = Kind("true or false", _boolean)
DIRECTORY = Kind("path", _directory)
# Orthanc's own options: Orthanc checks their types when it reads them itself, so these
# only shape them, as the plugin always did.
WHOLE = Kind("integer ≥ 0", lambda label, value: int(_number(label, value)))
JOBS = Kind("integer ≥ 0 (0 counts as 1)",     # Orthanc's 0 is "one per CPU": at least one
            lambda label, value: max(1, int(_number(label, value))))
FLAG = Kind("true or false", lambda label, value: bool(value))
FILE = Kind("path", lambda label, value: str(value or ""))


def _staging_under_storage(configuration: dict[str, Any]) -> str:
    storage = configuration.get("StorageDirectory", "OrthancStorage")
    return os.path.abspath(os.path.join(str(storage), "transfers-staging"))


@dataclass(frozen=True)
class Option:
    """One option: its JSON name, where it goes in :class:`TransfersConfig`, and its doc."""

    name: str
    attribute: str                  # the TransfersConfig field that holds it
    kind: Kind
    default: Any                    # as written in the configuration; None: "auto"
    unit: str                       # of the written value: "KiB", "MiB", "s" or ""
    origin: str                     # ORIGINAL, NEW or ORTHANC
    meaning: str
    scale: int = 1                  # attribute = written value * scale (KiB → bytes)
    shown: str = ""                 # the README's default, when not the value itself
    # A default computed from other options; used when the value is unset or "".
    derive: Callable[[dict[str, Any]], Any] | None = None

    @property
    def label(self) -> str:
        return self.name if self.origin == ORTHANC else f"Transfers.{self.name}"

    def effective(self, written: Any) -> Any:
        """The attribute's value for a written one (e.g. bytes for KiB)."""
        return written if self.scale == 1 else written * self.scale

    def written(self, effective: Any) -> Any:
        """The value as it would be written, for the start-up log."""
        if effective is None:
            return AUTO
        return effective if self.scale == 1 else effective // self.scale


#: Every option, in the README's order: the original's eight (reference §2.1), ours,
#: then Orthanc's.
OPTIONS: tuple[Option, ...] = (
    Option("Threads", "threads", POSITIVE, 4, "", ORIGINAL,
           "HTTP requests in flight per job; chunk requests served at once by a source"),
    Option("BucketSize", "bucket_size", POSITIVE, 4096, "KiB", ORIGINAL,
           "instances smaller than this are grouped; those of twice this size or more are split",
           scale=KIB),
    Option("CacheSize", "cache_size", POSITIVE, 512, "MiB", ORIGINAL,
           "source-side cache of whole DICOM files", scale=MIB),
    Option("MaxPushTransactions", "max_push_transactions", POSITIVE, 4, "", ORIGINAL,
           "push transactions a receiver holds at once; beyond, an idle one (≥ 60 s) is "
           "evicted or the newcomer gets 503 and retries"),
    Option("MaxHttpRetries", "max_http_retries", UNSIGNED, 5, "", ORIGINAL,
           "extra attempts per request (bucket, lookup, creation, commit), with exponential "
           "backoff and jitter; covers corrupted and short buckets too (the original's "
           "default is 0; see Unreliable links)"),
    Option("PeerConnectivityTimeout", "peer_connectivity_timeout", UNSIGNED, 2, "s", ORIGINAL,
           "timeout of each peer probe of `/transfers/peers`"),
    Option("PeerCommitTimeout", "peer_commit_timeout", UNSIGNED, 600, "s", ORIGINAL,
           "timeout of push creation and commit"),
    Option("CommitThreadsCount", "commit_threads_count", POSITIVE, 1, "", ORIGINAL,
           "threads importing into Orthanc through `RestApiPost` while it holds the GIL; "
           "imports that run in parallel use at least 4 (see `ImportThroughHttp`)"),
    Option("HttpRetryBackoff", "http_retry_backoff", NUMBER, 1.0, "s", NEW,
           "first pause before a retry; doubles each retry"),
    Option("HttpRetryBackoffMax", "http_retry_backoff_max", NUMBER, 30.0, "s", NEW,
           "longest pause between retries"),
    Option("OutageDeadline", "outage_deadline", UNSIGNED, 21600, "s", NEW,
           "how long a job waits for a peer that stays unreachable beyond one request's "
           "retries before it fails (per job: `OutageDeadline` in the request); 0: fail at "
           "once"),
    Option("PushTransactionTimeout", "push_transaction_timeout", UNSIGNED, 3600, "s", NEW,
           "idle push transactions are discarded after this, or after the sender's "
           "`OutageDeadline` and 10 minutes if that is longer"),
    Option("MaxInstanceSize", "max_instance_size", POSITIVE, 4096, "MiB", NEW,
           "a declared instance larger than this is refused (push and pull)", scale=MIB),
    Option("GzipLevel", "gzip_level", ZLIB_LEVEL, 1, "", NEW,
           "zlib level of gzip buckets; the original uses 6 (not part of the wire format: "
           "any level is read by any peer)"),
    Option("ImportThroughHttp", "import_through_http", BOOLEAN, None, "", NEW,
           "import by posting to this Orthanc's own `/instances` over loopback (true) or "
           "through `RestApiPost` (false); auto: see below", shown=AUTO),
    Option("ImportDuringTransfer", "import_during_transfer", BOOLEAN, False, "", NEW,
           "import each instance as soon as it is verified instead of all of them at the "
           "end (pull jobs, and push transactions this server receives); see below"),
    Option("SkipStoredInstances", "skip_stored_instances", BOOLEAN, False, "", NEW,
           "a pull does not download instances this Orthanc already stores with the same "
           "MD5 (counted in `SkippedInstances`); see below"),
    Option("RestrictChunksToTransfers", "restrict_chunks_to_transfers", BOOLEAN, False, "",
           NEW, "serve `/transfers/chunks` only for instances announced by a "
           "`/transfers/lookup` (of an ongoing transfer, refreshed while it runs; expires "
           "after `PushTransactionTimeout` unused); others get 403"),
    Option("StagingDirectory", "staging_directory", DIRECTORY, "", "", NEW,
           "received buckets, job state, push transactions",
           shown="`<StorageDirectory>/transfers-staging`", derive=_staging_under_storage),
    Option("HttpTimeout", "http_timeout", NUMBER, 60.0, "s", ORTHANC,
           "timeout of every other call to a peer (unless its `OrthancPeers` entry has a "
           "`Timeout`) and of loopback imports; 0: none"),
    Option("ConcurrentJobs", "concurrent_jobs", JOBS, 2, "", ORTHANC,
           "transfer jobs running at once"),
    Option("JobsHistorySize", "jobs_history_size", WHOLE, 10, "", ORTHANC,
           "finished transfer jobs kept"),
    Option("HttpsVerifyPeers", "https_verify_peers", FLAG, True, "", ORTHANC,
           "verify the certificates of HTTPS peers"),
    Option("HttpsCACertificates", "https_ca_certificates", FILE, "", "", ORTHANC,
           "CA certificates that HTTPS peers are verified against; unset: the system's",
           shown="unset"),
)

_BY_ATTRIBUTE = {option.attribute: option for option in OPTIONS}


def _default(attribute: str) -> Any:
    """The default of a TransfersConfig field, from its option's row."""
    option = _BY_ATTRIBUTE[attribute]
    return option.effective(option.default)


@dataclass(frozen=True)
class TransfersConfig:
    """The effective settings; sizes in bytes and durations in seconds (see OPTIONS)."""

    threads: int = _default("threads")
    bucket_size: int = _default("bucket_size")
    cache_size: int = _default("cache_size")
    max_push_transactions: int = _default("max_push_transactions")
    max_http_retries: int = _default("max_http_retries")
    peer_connectivity_timeout: float = _default("peer_connectivity_timeout")
    peer_commit_timeout: float = _default("peer_commit_timeout")
    commit_threads_count: int = _default("commit_threads_count")
    http_retry_backoff: float = _default("http_retry_backoff")
    http_retry_backoff_max: float = _default("http_retry_backoff_max")
    outage_deadline: float = _default("outage_deadline")
    push_transaction_timeout: float = _default("push_transaction_timeout")
    max_instance_size: int = _default("max_instance_size")
    gzip_level: int = _default("gzip_level")
    staging_directory: str = _default("staging_directory")    # "": not derived yet
    http_timeout: float = _default("http_timeout")
    jobs_history_size: int = _default("jobs_history_size")
    concurrent_jobs: int = _default("concurrent_jobs")
    restrict_chunks_to_transfers: bool = _default("restrict_chunks_to_transfers")
    import_through_http: bool | None = _default("import_through_http")  # None: auto
    import_during_transfer: bool = _default("import_during_transfer")
    skip_stored_instances: bool = _default("skip_stored_instances")
    https_verify_peers: bool = _default("https_verify_peers")
    https_ca_certificates: str = _default("https_ca_certificates")

    def imports_during_transfer(self, requested: bool | None) -> bool:
        """A transfer's ``ImportDuringTransfer``: its request's, else this option."""
        return self.import_during_transfer if requested is None else requested

    def skips_stored_instances(self, requested: bool | None) -> bool:
        """A pull's ``SkipStoredInstances``: its request's, else this option."""
        return self.skip_stored_instances if requested is None else requested

    def outage_deadline_of(self, requested: float | None) -> float:
        """A transfer's ``OutageDeadline``: its request's, else this option."""
        return self.outage_deadline if requested is None else requested

    def describe(self) -> dict[str, Any]:
        """Every option's effective value, under its name and in the unit it is written
        in (KiB, MiB, s; "auto" for an unset ``ImportThroughHttp``), for the start-up log."""
        return {option.name: option.written(getattr(self, option.attribute))
                for option in OPTIONS}


def _read(option: Option, section: dict[str, Any], configuration: dict[str, Any]) -> Any:
    """``option``'s value from the configuration, in its attribute's unit."""
    source = configuration if option.origin == ORTHANC else section
    value = (option.kind.parse(option.label, source[option.name])
             if option.name in source else option.default)
    if option.derive is not None and value == "":
        value = option.derive(configuration)
    return option.effective(value)


def parse_transfers_config(configuration: dict[str, Any]) -> TransfersConfig:
    """Build the effective settings from Orthanc's whole configuration."""
    section = configuration.get("Transfers", {})
    if not isinstance(section, dict):
        raise ConfigurationError("the Transfers section must be a JSON object")
    return TransfersConfig(**{option.attribute: _read(option, section, configuration)
                              for option in OPTIONS})


def _shown_default(option: Option) -> str:
    if option.shown:
        return option.shown
    value = option.default
    if isinstance(value, float) and value.is_integer():
        value = int(value)                   # "30", not "30.0", as people write it
    text = json.dumps(value)                 # true/false, as in the JSON configuration
    return f"{text} ({option.unit})" if option.unit else text


def options_markdown() -> str:
    """The README's table of options, as Markdown (one row per entry of OPTIONS)."""
    lines = ["| Option | Default | Accepts | Origin | Meaning |", "|---|---|---|---|---|"]
    lines += [f"| `{option.name}` | {_shown_default(option)} | {option.kind.text} "
              f"| {option.origin} | {option.meaning} |" for option in OPTIONS]
    return "\n".join(lines) + "\n"


# -- peers -----------------------------------------------------------------------------------

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


def _parse_each_peer(
        configuration: dict[str, Any]) -> dict[str, PeerConfig | ConfigurationError]:
    """Every ``OrthancPeers`` entry, parsed, or the reason it cannot be."""
    outcomes: dict[str, PeerConfig | ConfigurationError] = {}
    section = configuration.get("OrthancPeers", {})
    if isinstance(section, dict):
        for name, entry in section.items():
            try:
                outcomes[name] = parse_peer(name, entry)
            except ConfigurationError as error:
                outcomes[name] = error
    return outcomes


def parse_peers(configuration: dict[str, Any]) -> dict[str, PeerConfig]:
    """Every usable peer, by name; a malformed entry is left out (see peer_problems)."""
    return {name: outcome for name, outcome in _parse_each_peer(configuration).items()
            if isinstance(outcome, PeerConfig)}


def peer_problems(configuration: dict[str, Any]) -> list[str]:
    """One message per ``OrthancPeers`` entry that parse_peers leaves out, naming the peer
    and the reason, for the start-up log: without it, a typo in a peer only shows later,
    as "Unknown peer" on a transfer."""
    section = configuration.get("OrthancPeers", {})
    if not isinstance(section, dict):
        return ["OrthancPeers must be a JSON object: no peer can be used"]
    return [f"{outcome}: peer {name!r} left out"
            for name, outcome in _parse_each_peer(configuration).items()
            if isinstance(outcome, ConfigurationError)]


def find_peer(configuration: dict[str, Any], name: Any) -> PeerConfig:
    """The peer called ``name``, or a 404 naming it."""
    if not isinstance(name, str) or not name:
        raise BadRequest("'Peer' must be a non-empty string")
    peers = parse_peers(configuration)
    if name not in peers:
        known = ", ".join(sorted(peers)) or "none"
        raise UnknownResource(f"Unknown peer: {name!r} (known peers: {known})")
    return peers[name]


def main(arguments: list[str]) -> int:
    """``python3 -m orthanc_transfers.config --markdown`` prints the README's table."""
    if arguments != ["--markdown"]:
        print("usage: python3 -m orthanc_transfers.config --markdown", file=sys.stderr)
        return 2
    print(options_markdown(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
