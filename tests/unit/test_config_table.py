"""The table of options (config.OPTIONS) against what it drives: parsing, describe(), the
README's table. These tests fail when one of them drifts from the others."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from orthanc_transfers.config import (
    NEW,
    OPTIONS,
    ORIGINAL,
    ORTHANC,
    TransfersConfig,
    main,
    options_markdown,
    parse_transfers_config,
)

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- options:start -->\n", "<!-- options:end -->"
REGENERATE = "PYTHONPATH=plugin python3 -m orthanc_transfers.config --markdown"

# A value other than the default for every option, as written in the configuration.
WRITTEN_TRANSFERS = {
    "Threads": 6, "BucketSize": 1024, "CacheSize": 64, "MaxPushTransactions": 2,
    "MaxHttpRetries": 3, "PeerConnectivityTimeout": 5, "PeerCommitTimeout": 60,
    "CommitThreadsCount": 2, "HttpRetryBackoff": 0.5, "HttpRetryBackoffMax": 8.0,
    "OutageDeadline": 600, "PushTransactionTimeout": 60, "MaxInstanceSize": 100,
    "GzipLevel": 6,
    "ImportThroughHttp": False, "ImportDuringTransfer": True, "SkipStoredInstances": True,
    "RestrictChunksToTransfers": True, "StagingDirectory": "/fast/staging",
}
WRITTEN_ORTHANC = {"HttpTimeout": 30.0, "ConcurrentJobs": 3, "JobsHistorySize": 5,
                   "HttpsVerifyPeers": False, "HttpsCACertificates": "/etc/ca.pem"}
WRITTEN = {"Transfers": WRITTEN_TRANSFERS, **WRITTEN_ORTHANC}


def test_every_field_of_transfers_config_has_one_option() -> None:
    attributes = [option.attribute for option in OPTIONS]
    assert sorted(attributes) == sorted(f.name for f in dataclasses.fields(TransfersConfig))
    names = [option.name for option in OPTIONS]
    assert len(set(names)) == len(names)


def test_the_original_options_are_the_eight_of_the_reference() -> None:
    """Reference §2.1, in its order; everything else is ours or Orthanc's."""
    assert [option.name for option in OPTIONS if option.origin == ORIGINAL] == [
        "Threads", "BucketSize", "CacheSize", "MaxPushTransactions", "MaxHttpRetries",
        "PeerConnectivityTimeout", "PeerCommitTimeout", "CommitThreadsCount"]
    assert {option.origin for option in OPTIONS} == {ORIGINAL, NEW, ORTHANC}


def test_written_values_cover_every_option() -> None:
    """So that the round trip below checks every option, a new one included."""
    assert ({*WRITTEN_TRANSFERS, *WRITTEN_ORTHANC} == {option.name for option in OPTIONS})
    assert set(WRITTEN_ORTHANC) == {o.name for o in OPTIONS if o.origin == ORTHANC}


def test_describe_reports_every_option_as_written() -> None:
    described = parse_transfers_config(WRITTEN).describe()
    assert list(described) == [option.name for option in OPTIONS]
    assert described == {**WRITTEN_TRANSFERS, **WRITTEN_ORTHANC}


def test_describe_then_parse_gives_the_same_settings() -> None:
    config = parse_transfers_config(WRITTEN)
    described = config.describe()
    transfers = {name: described[name] for name in WRITTEN_TRANSFERS}
    orthanc = {name: described[name] for name in WRITTEN_ORTHANC}
    assert parse_transfers_config({"Transfers": transfers, **orthanc}) == config


def test_describe_of_the_defaults_names_every_option() -> None:
    """The issue: HttpRetryBackoffMax and the HTTPS options were missing from the log."""
    described = parse_transfers_config({"StorageDirectory": "/db"}).describe()
    assert set(described) == {option.name for option in OPTIONS}
    assert described["HttpRetryBackoffMax"] == 30
    assert (described["HttpsVerifyPeers"], described["HttpsCACertificates"]) == (True, "")
    assert described["ImportThroughHttp"] == "auto"
    assert described["StagingDirectory"] == "/db/transfers-staging"


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.default not in (None, "")],
                         ids=lambda option: option.name)
def test_each_default_is_a_value_its_parser_accepts_unchanged(option: Any) -> None:
    parsed = option.kind.parse(option.label, option.default)
    assert (parsed, type(parsed)) == (option.default, type(option.default))


def test_orthanc_options_are_read_at_the_top_level_only() -> None:
    misplaced = parse_transfers_config({"Transfers": {"HttpTimeout": 5},
                                        "Threads": 9, "StorageDirectory": "/db"})
    assert misplaced == parse_transfers_config({"StorageDirectory": "/db"})


def test_markdown_has_one_row_per_option() -> None:
    rows = options_markdown().splitlines()
    assert rows[0].startswith("| Option | Default |") and len(rows) == 2 + len(OPTIONS)
    for row, option in zip(rows[2:], OPTIONS, strict=True):
        assert row.startswith(f"| `{option.name}` |") and row.count(" | ") == 4
    assert "| `BucketSize` | 4096 (KiB) | integer ≥ 1 | original |" in rows[3]


def test_readme_table_is_the_generated_one() -> None:
    text = README.read_text()
    assert text.count(START) == 1 and text.count(END) == 1, f"README.md needs {START!r}"
    table = text.split(START, 1)[1].split(END, 1)[0]
    assert table == options_markdown(), (
        "README.md's table of options differs from OPTIONS in config.py; regenerate it: "
        f"`{REGENERATE}`, and paste the output between the {START.strip()} and {END} lines")


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == options_markdown()
    assert main([]) == 2
    assert "--markdown" in capsys.readouterr().err
