"""A frozen copy of the plugin for one benchmark, so that edits made meanwhile cannot mix
versions within one set of results.

The copy holds ``transfers.py`` and the ``orthanc_transfers`` package; Orthanc's
``PythonScript`` points at it, and the Python plugin puts the script's directory first on
``sys.path``, so the package is imported from the copy. Taken from the working tree
(default) or from a git revision (``git archive``).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PluginSnapshot:
    directory: Path            # temporary; holds plugin/transfers.py
    origin: str                # "working tree (HEAD abc1234 + changes)" or "git REV = sha"
    fingerprint: str           # sha256 of the Python files, 12 hex digits

    @property
    def script(self) -> Path:
        return self.directory / "plugin" / "transfers.py"

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True,
                          timeout=60).stdout


def _describe_head() -> str:
    """HEAD and whether plugin/ differs from it; the fingerprint alone where git is missing
    (the Debian 13 chroot has none)."""
    try:
        head = _git("rev-parse", "--short", "HEAD").decode().strip()
        dirty = bool(_git("status", "--porcelain", "--", "plugin").strip())
    except (OSError, subprocess.CalledProcessError):
        return "git not available"
    return f"HEAD {head}{' + uncommitted changes' if dirty else ''}"


def fingerprint(plugin_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(plugin_dir.rglob("*.py")):
        digest.update(str(path.relative_to(plugin_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def snapshot_plugin(revision: str | None = None) -> PluginSnapshot:
    directory = Path(tempfile.mkdtemp(prefix="tf-bench-plugin-"))
    try:
        if revision is None:
            shutil.copytree(REPO / "plugin", directory / "plugin",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            origin = f"working tree ({_describe_head()})"
        else:
            sha = _git("rev-parse", "--verify", f"{revision}^{{commit}}").decode().strip()
            with tarfile.open(fileobj=io.BytesIO(_git("archive", sha, "plugin"))) as tar:
                tar.extractall(directory, filter="data")
            origin = f"git {revision} = {sha[:12]}"
        if not (directory / "plugin" / "transfers.py").is_file():
            raise RuntimeError("no plugin/transfers.py in the snapshot")
        return PluginSnapshot(directory, origin, fingerprint(directory / "plugin"))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
