"""``memstream watch``: attach to a running ``pytest --memstream`` and show it live.

Without an endpoint it finds the newest running session of the project it is started in
(the session files in the pytest cache hold the endpoints and the run's secret); with one
it attaches to any run whose secret it is given (``--secret`` or ``MEMSTREAM_SECRET``).
The terminal view uses rich; ``--json`` prints one JSON object per event instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from pytest_memstream.cli.client import Event, Mirror, Viewer, ViewerError
from pytest_memstream.cli.screen import SORT_FIELDS, Status, render
from pytest_memstream.cli.session import newest_session

#: Seconds between two redraws: several a second, no more (the sink coalesces too).
REDRAW_EVERY = 0.2
#: How often to look for a session to appear with ``--wait``.
WAIT_POLL = 0.2
EXIT_OK, EXIT_NOTHING, EXIT_LOST, EXIT_INTERRUPTED = 0, 1, 3, 130


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watch",
        help="show a running pytest --memstream session live",
        description=(
            "Attach to a running pytest --memstream session and show, live, what every "
            "worker runs and how much memory it takes, the top tests so far, crashed "
            "workers and totals.  Without ENDPOINT: the newest running session of the "
            "project in the current directory."
        ),
    )
    parser.add_argument(
        "endpoint",
        nargs="?",
        metavar="ENDPOINT",
        help="the session's snapshot endpoint, e.g. tcp://127.0.0.1:40123",
    )
    parser.add_argument(
        "--secret",
        metavar="HEX",
        default=os.environ.get("MEMSTREAM_SECRET"),
        help="the run's secret, in hex (default: $MEMSTREAM_SECRET); needed with ENDPOINT",
    )
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
    parser.add_argument(
        "--sort", choices=list(SORT_FIELDS), default="growth", help="order of the top list"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the pytest cache directory to look in (default: .pytest_cache here or above)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        viewer = _attach(args)
    except ViewerError as exc:
        print(f"memstream watch: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    try:
        if args.json:
            return watch_json(viewer, sys.stdout)
        return watch_screen(viewer, args)
    except ViewerError as exc:
        print(f"memstream watch: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    finally:
        viewer.close()


def _attach(args: argparse.Namespace) -> Viewer:
    if args.endpoint:
        if not args.secret:
            raise ViewerError("give the run's secret with --secret HEX or $MEMSTREAM_SECRET")
        try:
            secret = bytes.fromhex(args.secret)
        except ValueError:
            raise ViewerError("--secret must be hexadecimal") from None
        return Viewer(args.endpoint, secret, wait=args.wait)
    here = Path.cwd()
    announced = False
    while True:
        session = newest_session(here, args.cache_dir)
        if session is not None:
            return Viewer(session.snapshot, session.secret, wait=args.wait)
        where = args.cache_dir or "the pytest cache of this directory or any above it"
        if not args.wait:
            raise ViewerError(
                f"no running pytest --memstream session found in {where}; start one with "
                "`pytest --memstream`, use --wait, or give ENDPOINT and --secret"
            )
        if not announced:
            print(f"memstream watch: waiting for a session in {where}", file=sys.stderr)
            announced = True
        time.sleep(WAIT_POLL)


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
