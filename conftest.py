"""Fixtures shared by every test directory (real Orthanc servers, WAN proxies)."""

pytest_plugins = ["devkit.pytest_servers"]
