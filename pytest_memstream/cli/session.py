"""Finding a running session: the files that ``pytest --memstream`` leaves in its cache.

The controller writes ``<cache dir>/d/memstream/session-<pid>.json`` (mode 0600) while it
runs and removes it at the end: the endpoints, the run's secret, its pid and start time.
A file whose pid is gone is left over from a run that was killed; it is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_SUBDIR = Path("d") / "memstream"


@dataclass(frozen=True)
class Session:
    path: Path
    pid: int
    started: float
    secret: bytes
    snapshot: str
    rootdir: str

    @classmethod
    def read(cls, path: Path) -> Session | None:
        """The session described by ``path``, or None if it is unreadable or too old."""
        try:
            content: Any = json.loads(path.read_text(encoding="utf-8"))
            viewers = content["viewers"]
            return cls(
                path=path,
                pid=int(content["pid"]),
                started=float(content["started"]),
                secret=bytes.fromhex(content["secret"]),
                snapshot=str(viewers["snapshot"]),
                rootdir=str(content.get("rootdir", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, though not likely ours
    except OSError:
        return False
    return True


def cache_dirs(start: Path) -> list[Path]:
    """``.pytest_cache`` directories from ``start`` up to the root, nearest first."""
    start = start.resolve()
    return [d / ".pytest_cache" for d in (start, *start.parents) if (d / ".pytest_cache").is_dir()]


def find_sessions(cache_dir: Path) -> list[Session]:
    """The live sessions recorded in ``cache_dir``, newest first."""
    directory = cache_dir / CACHE_SUBDIR
    try:
        paths = sorted(directory.glob("session-*.json"))
    except OSError:
        return []
    sessions = [s for s in map(Session.read, paths) if s is not None and s.alive]
    return sorted(sessions, key=lambda s: s.started, reverse=True)


def newest_session(start: Path, cache_dir: Path | None = None) -> Session | None:
    """The newest live session of the nearest project at or above ``start``."""
    for directory in [cache_dir] if cache_dir is not None else cache_dirs(start):
        sessions = find_sessions(directory)
        if sessions:
            return sessions[0]
    return None
