"""``memstream watch``: attach to a running ``pytest --memstream`` and show it live.

Without arguments it finds the newest running session of the project it is started in
(the session files in the pytest cache hold the endpoints and the run's secret);
``--session FILE`` names a session file (``pytest --memstream-session FILE`` writes one
anywhere); an ENDPOINT takes the secret from ``MEMSTREAM_SECRET``.  A secret is never a
command-line argument: every local user can read those (``ps``).  On a terminal the view
is drawn with rich; ``--json`` prints one JSON object per event; otherwise (a pipe, a
file) one plain line per finished test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from pytest_memstream import SORT_KEYS
from pytest_memstream.cli.client import Event, Mirror, Viewer, ViewerError
from pytest_memstream.cli.screen import Status, render
from pytest_memstream.session import Session, live_sessions
from pytest_memstream.sizes import format_size

#: Seconds between two redraws: several a second, no more (the sink coalesces too).
REDRAW_EVERY = 0.2
#: How often to look for a session to appear with ``--wait``.
WAIT_POLL = 0.2
EXIT_OK, EXIT_NOTHING, EXIT_LOST, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 3, 4, 130
SECRET_ENV = "MEMSTREAM_SECRET"
_ENDPOINT = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}|ipc://.+")


class UsageError(Exception):
    """The command line asks for something that cannot work; the message says why."""


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watch",
        help="show a running pytest --memstream session live",
        description=(
            "Attach to a running pytest --memstream session and show, live, what every "
            "worker runs and how much memory it takes, the top tests so far, crashed "
            "workers and totals.  Without ENDPOINT or --session: the newest running session "
            "of the project in the current directory."
        ),
    )
    parser.add_argument(
        "endpoint",
        nargs="?",
        metavar="ENDPOINT",
        help=f"the session's snapshot endpoint, e.g. tcp://127.0.0.1:40123 (the run's secret "
        f"from ${SECRET_ENV})",
    )
    parser.add_argument(
        "--session",
        type=Path,
        metavar="FILE",
        help="the run's session file (pytest --memstream-session FILE, or the one in its cache)",
    )
    parser.add_argument(
        "--pid", type=int, metavar="PID", help="the run of this pytest process (see --list)"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the running sessions found, and exit"
    )
    # Refused with a reason rather than unknown: a secret on the command line is readable
    # by every local user.
    parser.add_argument("--secret", metavar="HEX", help=argparse.SUPPRESS)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per event on stdout"
    )
    parser.add_argument(
        "--stay", action="store_true", help="keep showing the final state until q is pressed"
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for a session to start instead of giving up"
    )
    parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="how many tests to list (default 10)"
    )
    parser.add_argument("--sort", choices=SORT_KEYS, default="growth", help="order of the top list")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the pytest cache directory to look in (default: .pytest_cache here or above)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        if args.secret is not None:
            raise UsageError(
                "--secret is refused: a command line is visible to every local user (ps). "
                f"Use --session FILE (the run's session file), or ${SECRET_ENV} with ENDPOINT"
            )
        if args.list:
            return list_sessions(args, sys.stdout)
        viewer = _attach(args)
    except UsageError as exc:
        print(f"memstream watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ViewerError as exc:
        print(f"memstream watch: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        if args.json:
            return watch_json(viewer, sys.stdout)
        if sys.stdout.isatty():
            return watch_screen(viewer, args)
        return watch_lines(viewer, sys.stdout)
    except ViewerError as exc:
        print(f"memstream watch: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        viewer.close()


def _where(args: argparse.Namespace) -> str:
    return str(args.cache_dir or "the pytest cache of this directory or any above it")


def list_sessions(args: argparse.Namespace, out: TextIO) -> int:
    sessions = live_sessions(Path.cwd(), args.cache_dir)
    if not sessions:
        print(f"memstream watch: no running session in {_where(args)}", file=sys.stderr)
        return EXIT_NOTHING
    out.write(f"{'pid':>8}  {'started':<19}  {'viewers at':<24}  session file\n")
    for session in sessions:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(session.started))
        out.write(f"{session.pid:>8}  {started:<19}  {session.snapshot:<24}  {session.path}\n")
    return EXIT_OK


def _attach(args: argparse.Namespace) -> Viewer:
    if args.endpoint:
        if args.session is not None:
            raise UsageError("give ENDPOINT or --session FILE, not both")
        if not _ENDPOINT.fullmatch(args.endpoint):
            raise UsageError(
                f"{args.endpoint!r} is not an endpoint: expected tcp://HOST:PORT or ipc://PATH"
            )
        secret = os.environ.get(SECRET_ENV, "")
        if not secret:
            raise UsageError(
                f"ENDPOINT needs the run's secret in ${SECRET_ENV}; or use --session FILE"
            )
        try:
            key = bytes.fromhex(secret)
        except ValueError:
            raise UsageError(f"${SECRET_ENV} must be hexadecimal") from None
        return _viewer(args.endpoint, key, args.wait)
    announced = False
    while True:
        session = _find_session(args)
        if session is not None:
            return _viewer(session.snapshot, session.secret, args.wait)
        if not args.wait:
            what = f"session file {args.session}" if args.session else "session"
            if args.session is None:
                what = f"running pytest --memstream session found in {_where(args)}"
                if args.pid is not None:
                    what += f" with pid {args.pid}"
                raise ViewerError(
                    f"no {what}; start one with `pytest --memstream`, use --wait, or give "
                    "--session FILE"
                )
            raise ViewerError(f"no running session in {what}")
        if not announced:
            where = args.session or _where(args)
            print(f"memstream watch: waiting for a session in {where}", file=sys.stderr)
            announced = True
        time.sleep(WAIT_POLL)


def _find_session(args: argparse.Namespace) -> Session | None:
    if args.session is not None:
        session = Session.read(args.session)
        if session is None and args.session.exists() and not args.wait:
            raise ViewerError(f"{args.session} is not a memstream session file")
        return session if session is not None and session.alive else None
    sessions = live_sessions(Path.cwd(), args.cache_dir)
    if args.pid is not None:
        sessions = [s for s in sessions if s.pid == args.pid]
    if len(sessions) > 1:
        print(
            f"memstream watch: {len(sessions)} runs are going on; watching the newest (pid "
            f"{sessions[0].pid}). --list shows them, --pid PID picks one",
            file=sys.stderr,
        )
    return sessions[0] if sessions else None


def _viewer(endpoint: str, secret: bytes, wait: bool) -> Viewer:
    try:
        return Viewer(endpoint, secret, wait=wait)
    except ViewerError as exc:
        raise UsageError(str(exc)) from None


# --- JSON lines ---------------------------------------------------------------------------


def event_json(event: Event, mirror: Mirror) -> dict[str, Any]:
    """The JSON object printed for ``event``."""
    out: dict[str, Any] = {"event": event.kind, "seq": event.seq}
    if event.kind == "snapshot":
        out["state"] = mirror.values
        out["totals"] = mirror.totals()
    elif event.kind == "update":
        out["sets"] = event.sets
    elif event.kind == "behind":
        out["expected"] = event.expected
    elif event.kind in ("finished", "lost"):
        out["totals"] = mirror.totals()
        if event.reason:
            out["reason"] = event.reason
    return out


def watch_json(viewer: Viewer, out: TextIO) -> int:
    """Print every event as one JSON line until the run ends; the exit status says how."""
    try:
        while True:
            events, _ = viewer.poll(0.5)
            for event in events:
                out.write(json.dumps(event_json(event, viewer.mirror), separators=(",", ":")))
                out.write("\n")
                out.flush()
                if event.kind == "finished":
                    return EXIT_OK
                if event.kind == "lost":
                    return EXIT_LOST
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away: so do we, quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK


# --- plain lines, for a pipe or a file ---------------------------------------------------


def watch_lines(viewer: Viewer, out: TextIO) -> int:
    """One line when attached, one per test as it finishes, one at the end."""
    shown: set[str] = set()
    try:
        while True:
            events, _ = viewer.poll(0.5)
            for event in events:
                for line in _lines(event, viewer.mirror, shown):
                    out.write(line + "\n")
                out.flush()
                if event.kind == "finished":
                    return EXIT_OK
                if event.kind == "lost":
                    return EXIT_LOST
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK


def _lines(event: Event, mirror: Mirror, shown: set[str]) -> list[str]:
    if event.kind == "snapshot":
        first = not shown
        shown.update(key for key in mirror.values if key.startswith("t/"))
        shown.add("")  # attached
        if not first:
            return [f"memstream watch: resynchronised at update {event.seq}"]
        run = mirror.run
        return [
            f"memstream watch: attached to the run of pid {run.get('pid', '?')}: "
            f"{mirror.totals()['tests']} tests done so far"
        ]
    if event.kind == "behind":
        return [f"memstream watch: fell behind at update {event.seq}: taking a fresh snapshot"]
    if event.kind == "update":
        lines = []
        for key, value in event.sets.items():
            if key.startswith("t/") and key not in shown:
                shown.add(key)
                mark = "" if value["outcome"] == "passed" else f"  [{value['outcome']}]"
                lines.append(
                    f"{format_size(value['growth'], signed=True):>8}  "
                    f"{format_size(value['peak_rss']):>8}  {value['worker']:<6}  "
                    f"{value['nodeid']}{mark}"
                )
        return lines
    totals = mirror.totals()
    summary = (
        f"{totals['tests']} tests on {totals['workers']} workers, {totals['lost']} lost, "
        f"{totals['recovered']} recovered"
        + (f", crashed: {', '.join(totals['crashed'])}" if totals["crashed"] else "")
    )
    if event.kind == "finished":
        return [f"memstream watch: the run finished: {summary}"]
    return [f"memstream watch: lost contact with the run ({event.reason}): {summary}"]


# --- the terminal view ------------------------------------------------------------------


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[bool]:
    """Keys without Enter and without echo while inside; the terminal restored after."""
    if not os.isatty(fd):
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Rate:
    """Messages per second over the last few seconds, from the run's message counter."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self._points: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> float:
        points = self._points
        points.append((now, count))
        while len(points) > 2 and now - points[0][0] > self.window:
            points.popleft()
        (t0, c0), (t1, c1) = points[0], points[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def watch_screen(viewer: Viewer, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console(highlight=False)
    status = Status(endpoint=viewer.endpoint, stay=args.stay)
    rate = Rate()
    stdin = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else -1
    code = EXIT_OK

    def draw() -> Any:
        return render(
            viewer.mirror, status, console.width, console.height, max(0, args.top), args.sort
        )

    # Nothing is drawn before the run answers: a run that never does is one line of
    # error on a clean screen, not an empty frame.
    pending = _attached(viewer)
    with cbreak(stdin) if stdin >= 0 else contextlib.nullcontext(False) as keys:
        if keys:
            viewer.register(stdin)
        live = Live(
            draw(),
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )
        try:
            with live:
                last_draw = 0.0
                while True:
                    events, ready = viewer.poll(REDRAW_EVERY / 2, [stdin] if keys else [])
                    events, pending = pending + events, []
                    if ready and _quit_pressed(stdin):
                        break
                    done = _note(events, status)
                    now = time.monotonic()
                    if viewer.mirror.run:
                        status.rate = rate.add(now, int(viewer.mirror.run.get("messages", 0)))
                    if done or now - last_draw >= REDRAW_EVERY:
                        live.update(draw(), refresh=True)
                        last_draw = now
                    if done:
                        code = EXIT_LOST if status.lost else EXIT_OK
                        if not (args.stay and keys):
                            break
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
    return code


def _attached(viewer: Viewer) -> list[Event]:
    """Wait for the first snapshot; the events so far."""
    events: list[Event] = []
    while not any(event.kind == "snapshot" for event in events):
        more, _ = viewer.poll(REDRAW_EVERY)
        events += more
    return events


def _quit_pressed(fd: int) -> bool:
    try:
        data = os.read(fd, 64)
    except OSError:
        return False
    return b"q" in data.lower() or data == b""


def _note(events: list[Event], status: Status) -> bool:
    """Record what ``events`` mean for the screen; True when the run is over."""
    done = False
    for event in events:
        if event.kind == "behind":
            status.resyncs += 1
            status.notice = (
                f"fell behind (had update {event.seq}, then saw {event.expected}): "
                "resynchronising from a fresh snapshot"
            )
        elif event.kind == "snapshot" and status.resyncs:
            status.notice = f"resynchronised at update {event.seq} ({status.resyncs} times)"
        elif event.kind == "finished":
            status.finished = True
            done = True
        elif event.kind == "lost":
            status.lost = event.reason
            done = True
    return done
