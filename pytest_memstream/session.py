"""The session file: where a running ``pytest --memstream`` can be watched, with its secret.

While a run lasts, its controller keeps ``<cache dir>/d/memstream/session-<pid>.json``
(or the file ``--memstream-session PATH`` names), mode 0600: the endpoints, the run's
secret, and the process that owns them.  It is the one credential a viewer needs: the
secret never goes on a command line.  A file whose process is gone is left over from a
run that was killed; a process id is reused, so the file also keeps the process's start
time (field 22 of ``/proc/PID/stat``), and a file is live only if both still match.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_SUBDIR = Path("d") / "memstream"
PATTERN = "session-*.json"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
        # The command name, field 2, may hold spaces and parentheses: count after it.
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


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


@dataclass(frozen=True)
class Session:
    path: Path
    pid: int
    started: float
    secret: bytes
    snapshot: str
    rootdir: str
    endpoint: str
    #: The process's start time, if the writer knew it (see process_start).
    ticks: int | None

    @classmethod
    def read(cls, path: Path) -> Session | None:
        """The session described by ``path``, or None if it is unreadable."""
        try:
            content: Any = json.loads(path.read_text(encoding="utf-8"))
            viewers = content["viewers"]
            ticks = content.get("process_start")
            return cls(
                path=path,
                pid=int(content["pid"]),
                started=float(content["started"]),
                secret=bytes.fromhex(content["secret"]),
                snapshot=str(viewers["snapshot"]),
                rootdir=str(content.get("rootdir", "")),
                endpoint=str(content.get("endpoint", "")),
                ticks=ticks if type(ticks) is int else None,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @property
    def alive(self) -> bool:
        """Whether the process that wrote it still runs (the same process, not its pid
        given to another)."""
        if not pid_alive(self.pid):
            return False
        return self.ticks is None or process_start(self.pid) in (self.ticks, None)


def write(path: Path, content: dict[str, Any]) -> None:
    """Write a session file readable by this user only, atomically."""
    content = dict(content, pid=os.getpid(), process_start=process_start(os.getpid()))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(content, file)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale(directory: Path) -> list[Path]:
    """Remove the session files in ``directory`` whose run is gone; the paths removed."""
    removed = []
    for path in _session_paths(directory):
        session = Session.read(path)
        if session is not None and not session.alive:
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


def _session_paths(directory: Path) -> list[Path]:
    try:
        return sorted(directory.glob(PATTERN))
    except OSError:
        return []


def cache_dirs(start: Path) -> list[Path]:
    """``.pytest_cache`` directories from ``start`` up to the root, nearest first."""
    start = start.resolve()
    return [d / ".pytest_cache" for d in (start, *start.parents) if (d / ".pytest_cache").is_dir()]


def find_sessions(cache_dir: Path) -> list[Session]:
    """The live sessions recorded in ``cache_dir``, newest first."""
    found = [Session.read(path) for path in _session_paths(cache_dir / CACHE_SUBDIR)]
    sessions = [s for s in found if s is not None and s.alive]
    return sorted(sessions, key=lambda s: s.started, reverse=True)


def live_sessions(start: Path, cache_dir: Path | None = None) -> list[Session]:
    """The live sessions of the nearest project at or above ``start`` that has any."""
    for directory in [cache_dir] if cache_dir is not None else cache_dirs(start):
        sessions = find_sessions(directory)
        if sessions:
            return sessions
    return []
