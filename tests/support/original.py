"""The real Pacifica Cartd 0.7.0, in its own venv, making carts on a database and volume.

The venv (`cartd-original`, pins in `tests/requirements/cartd-original.txt`) is built on
first use like the archive's. `make_carts` runs `original_carts.py` with its python: the
original's own `dbsync`, POST rows and Celery tasks make the carts (see that file).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.venvs import REQUIREMENTS_DIR, ensure_venv

VENV_NAME = "cartd-original"
SCRIPT = Path(__file__).with_name("original_carts.py")


def original_python() -> Path:
    return ensure_venv(VENV_NAME, REQUIREMENTS_DIR / "cartd-original.txt") / "python"


def make_carts(
    specs: list[dict[str, Any]], *, volume: Path, peewee_url: str, archive_url: str, home: Path
) -> dict[str, dict[str, Any]]:
    """Make the carts `specs` describes with the original; return each by uid: its id,
    status and error in the original's tables."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "CARTD_CONFIG": str(home / "absent" / "config.ini"),  # its defaults and these only
        "VOLUME_PATH": str(volume),
        "PEEWEE_URL": peewee_url,
        "ARCHIVE_INTERFACE_URL": archive_url,
        "BROKER_URL": "memory://",  # never used: its tasks run in the script itself
        "BACKEND_URL": "cache+memory://",
    }
    run = subprocess.run(
        [str(original_python()), str(SCRIPT)],
        input=json.dumps(specs),
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"the original failed to make its carts:\n{run.stderr}")
    return {cart["uid"]: cart for cart in json.loads(run.stdout)}
