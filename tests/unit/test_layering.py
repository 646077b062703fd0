"""The package's layering, as its README states it: ``host.py`` alone reaches Orthanc
(its module and its own HTTP server), and REST handlers never see the whole app."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "plugin" / "orthanc_transfers"
MODULES = sorted(PACKAGE.glob("*.py"))
#: Options of Orthanc's own HTTP server: whoever reads them is talking to this Orthanc.
OWN_SERVER_OPTIONS = {"HttpPort", "HttpServerEnabled", "SslEnabled", "RegisteredUsers"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_only_the_adapter_imports_orthanc() -> None:
    importers = [path.name for path in MODULES if "orthanc" in imported_modules(path)]
    assert importers == ["host.py"]


def test_only_the_adapter_reads_the_settings_of_orthancs_own_http_server() -> None:
    readers = [path.name for path in MODULES if string_constants(path) & OWN_SERVER_OPTIONS]
    assert readers == ["host.py"]


def test_rest_handlers_get_narrow_values_not_the_app() -> None:
    for name in ("rest.py", "rest_jobs.py", "rest_transfers.py", "routing.py"):
        assert ".app" not in imported_modules(PACKAGE / name), name
