"""What the controller tells people about its sink: the session file that lets
``memstream watch`` attach (the endpoints and the run's secret), and the header lines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from pytest_memstream.plugin.options import Settings
    from pytest_memstream.plugin.sinkstart import SinkStarter
    from pytest_memstream.security import RunKeys


def write_session_file(
    config: pytest.Config, settings: Settings, starter: SinkStarter, keys: RunKeys
) -> Path | None:
    """Write where this run streams, with its secret, to a file only this user can read:
    in the pytest cache, or where --memstream-session says.  Its path, or None where
    there is no cache and no --memstream-session.  OSError if it cannot be written."""
    from pytest_memstream import session

    path = settings.session_path
    if path is None:
        cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
        if cache is None:
            return None
        directory = cache.mkdir("memstream")
        path = directory / f"session-{os.getpid()}.json"
        session.remove_stale(directory)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    endpoint, viewers = starter.endpoint, dict(starter.viewer_endpoints)
    if settings.advertise is not None:
        # Where a viewer on another machine reaches them: the file is carried there.
        from pytest_memstream.plugin.remote import advertised

        endpoint = advertised(endpoint, settings.advertise)
        viewers = {k: advertised(v, settings.advertise) for k, v in viewers.items()}
    session.write(
        path,
        {
            "endpoint": endpoint,
            "secret": keys.secret.hex(),
            "started": starter.began,
            "rootdir": str(config.rootpath),
            # Where `memstream watch` attaches; see docs/protocol.md.
            "viewers": viewers,
        },
    )
    return path


def header_lines(config: pytest.Config, settings: Settings, starter: SinkStarter) -> list[str]:
    """The lines pytest's header gets: where the sink and the viewers' sockets are, and
    where the reports go."""
    lines = [f"memstream: sink {starter.endpoint}"]
    if starter.viewer_endpoints:
        lines.append(f"memstream: viewers attach at {starter.viewer_endpoints['snapshot']}")
    else:
        lines.append(f"memstream: no viewers for this run: {starter.viewer_problem}")
    if settings.session_path is None and getattr(config, "cache", None) is None:
        lines.append(
            "memstream: no session file, so memstream watch cannot find this run: the "
            "pytest cache is off (-p no:cacheprovider); run with --memstream-session PATH "
            "and attach with memstream watch --session PATH"
        )
    if not _is_loopback(starter.endpoint):
        lines.append(
            "memstream: the sink listens beyond this machine (CurveZMQ: encrypted, and "
            "only this run's keys are admitted)"
        )
    if settings.advertise is not None:
        lines.append(
            f"memstream: workers on other hosts, and the session file, name this machine "
            f"{settings.advertise}"
        )
    if settings.json_path is not None:
        lines.append(f"memstream: JSON report to {settings.json_path}")
    if settings.html_path is not None:
        lines.append(f"memstream: HTML report to {settings.html_path}")
    return lines


def _is_loopback(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return True  # ipc:// and inproc:// never leave the machine
    host = endpoint[len("tcp://") :].rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
