"""The start-up report of what the running Orthanc and Python plugin allow."""

from __future__ import annotations

from orthanc_transfers.capabilities import (
    Platform,
    import_threads,
    imports_through_http,
    keeps_request_bodies,
    platform_report,
    releases_gil,
    version_of,
)

DEBIAN_12 = Platform(orthanc="1.10.1", python_plugin="4.0", python="3.11.2")
DEBIAN_13 = Platform(orthanc="1.12.7", python_plugin="5.0", python="3.13.5",
                     stream_answers=True)


def test_versions_are_read_from_their_text() -> None:
    assert version_of("4.0") == (4, 0) and version_of("5.0.1") == (5, 0)
    assert version_of("mainline") is None and version_of("") is None


def test_request_bodies_are_kept_only_where_measured() -> None:
    assert keeps_request_bodies(DEBIAN_12) is True
    assert keeps_request_bodies(DEBIAN_13) is False
    assert keeps_request_bodies(Platform(python_plugin="4.3")) is None      # not measured
    assert keeps_request_bodies(Platform(python_plugin="mainline")) is None


def test_debian_12_report_warns_about_bodies_and_lacks_newer_features() -> None:
    report = platform_report(DEBIAN_12)
    assert report[0] == "Orthanc 1.10.1, Python plugin 4.0, Python 3.11.2"
    assert any(line.startswith("WARNING: this Python plugin never frees") for line in report)
    assert any(line.startswith("AllowThreads: not available") for line in report)
    assert any(line.startswith("stream answers: not available") for line in report)


def test_debian_13_report_has_no_body_warning_and_says_allow_threads() -> None:
    report = platform_report(DEBIAN_13)
    assert not any("WARNING" in line for line in report)
    assert any(line.startswith("AllowThreads: off; ") for line in report)
    assert "AllowThreads: on" in platform_report(
        Platform(python_plugin="5.0", allow_threads=True))
    assert any(line.startswith("stream answers: available") for line in report)


def test_the_gil_is_released_only_with_allow_threads_on_plugin_4_3_or_later() -> None:
    assert releases_gil(Platform(python_plugin="5.0", allow_threads=True))
    assert releases_gil(Platform(python_plugin="4.3", allow_threads=True))
    assert not releases_gil(Platform(python_plugin="4.0", allow_threads=True))   # ignored
    assert not releases_gil(Platform(python_plugin="5.0"))


def test_unmeasured_versions_are_said_so() -> None:
    report = platform_report(Platform(orthanc="1.12.5", python_plugin="4.3"))
    assert any("not measured" in line for line in report)
    assert not any("WARNING" in line for line in report)


def test_import_route_follows_allow_threads_unless_set() -> None:
    """Auto: through HTTP where RestApiPost holds the GIL (parallel there), RestApiPost
    once AllowThreads lets it run in parallel (faster, measured); never HTTP where
    Orthanc's HTTP server cannot take it; parallel imports use at least 4 threads."""
    assert imports_through_http(None, True, releases_gil=False)
    assert not imports_through_http(None, True, releases_gil=True)
    assert imports_through_http(True, True, releases_gil=True)
    assert not imports_through_http(False, True, releases_gil=False)
    assert not imports_through_http(None, False, releases_gil=False)
    assert not imports_through_http(True, False, releases_gil=False)
    assert import_threads(1, through_http=True, releases_gil=False) == 4
    assert import_threads(1, through_http=False, releases_gil=True) == 4
    assert import_threads(1, through_http=False, releases_gil=False) == 1
    assert import_threads(6, through_http=True, releases_gil=True) == 6
