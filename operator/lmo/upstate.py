"""The state file of a running `lmo up`: how `lmo status --local` and friends find it.

`<work-dir>/up.json` holds the front door URL, the process id and the file being served.
It is written once the front door listens and removed on shutdown; a file left by a
process that no longer runs is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "up.json"
DEFAULT_WORK_DIR = ".lmo"


def write_state(work_dir: Path, data: dict[str, Any]) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def remove_state(work_dir: Path) -> None:
    path = work_dir / STATE_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(work_dir: Path | str = DEFAULT_WORK_DIR) -> dict[str, Any] | None:
    """The state of a running `lmo up` in `work_dir`, or None."""
    path = Path(work_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not _alive(int(data.get("pid", 0) or 0)):
        return None
    return data


def local_url(work_dir: Path | str = DEFAULT_WORK_DIR) -> str | None:
    """Front door URL of a running `lmo up` (None when there is none)."""
    state = read_state(work_dir)
    return state["url"] if state else None
