"""Side virtual environments for tools whose old pins clash with the project's env.

The real Pacifica Archive Interface and Downloader pin libraries far older
than ``cartd`` uses, so each lives in its own venv under ``$CARTD_TEST_VENVS``
(default ``<repo>/.venvs/``).  A venv is rebuilt only when it is missing or
its requirements (or the interpreter) changed, and an ``fcntl`` lock keeps
parallel test processes (e.g. pytest-xdist workers) from building it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS_DIR = REPO_ROOT / "tests" / "requirements"
STAMP_NAME = ".requirements.sha256"


class VenvError(RuntimeError):
    """Raised when a side venv cannot be built; carries pip's output."""


def venvs_root() -> Path:
    """Return the folder holding all side venvs (``$CARTD_TEST_VENVS`` wins)."""
    configured = os.environ.get("CARTD_TEST_VENVS")
    return Path(configured) if configured else REPO_ROOT / ".venvs"


def requirements_digest(requirements: Path) -> str:
    """Hash the requirements plus the interpreter version.

    The interpreter is part of the key because a venv made by another Python
    (e.g. after an image upgrade) has dangling symlinks and must be rebuilt.
    """
    digest = hashlib.sha256()
    digest.update(requirements.read_bytes())
    digest.update(f"\0{sys.version_info[:3]}\0{sys.implementation.name}".encode())
    return digest.hexdigest()


def _is_current(venv: Path, wanted: str) -> bool:
    """Tell whether ``venv`` was built from the wanted requirements."""
    stamp = venv / STAMP_NAME
    python = venv / "bin" / "python"
    try:
        return stamp.read_text().strip() == wanted and python.exists()
    except OSError:
        return False


def _run(cmd: list[str]) -> None:
    """Run a build step, raising ``VenvError`` with its output on failure."""
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if proc.returncode != 0:
        raise VenvError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}")


def _build(venv: Path, requirements: Path, wanted: str) -> None:
    """Create ``venv`` from scratch and install ``requirements`` into it."""
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ]
    )
    # Written last and atomically: a build killed halfway leaves no stamp, so
    # the next caller rebuilds instead of trusting a half-installed venv.
    tmp = venv / f"{STAMP_NAME}.tmp"
    tmp.write_text(wanted + "\n")
    tmp.replace(venv / STAMP_NAME)


def ensure_venv(name: str, requirements: Path) -> Path:
    """Return the ``bin`` dir of venv ``name``, (re)building it if stale.

    Cheap when up to date: one hash and one stamp read under the lock.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad venv name: {name!r}")
    requirements = requirements.resolve()
    root = venvs_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / name
    wanted = requirements_digest(requirements)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _is_current(venv, wanted):
                _build(venv, requirements, wanted)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return venv / "bin"


def ensure_all() -> list[Path]:
    """Build every side venv that is missing or stale (one per file of `REQUIREMENTS_DIR`),
    so that the test run itself never spends its time, or its timeouts, installing them."""
    return [ensure_venv(path.stem, path) for path in sorted(REQUIREMENTS_DIR.glob("*.txt"))]


if __name__ == "__main__":
    for built in ensure_all():
        print(f"side venv ready: {built.parent}")
