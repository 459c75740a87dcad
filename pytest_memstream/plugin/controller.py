"""The controlling pytest process: owns the sink, hands its address to workers, reports.

Under pytest-xdist this is the controller (it runs no tests).  Without xdist the one
pytest process is both: it runs a local Recorder that streams to its own sink as worker
``main``, over the same path, so a viewer can attach to a plain run too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_memstream.plugin.options import Settings
from pytest_memstream.plugin.sinkstart import SinkStarter

if TYPE_CHECKING:
    from pytest_memstream.collector.report import Report
    from pytest_memstream.collector.sink import Sink
    from pytest_memstream.collector.state import RunState
    from pytest_memstream.handover import WorkerSpec
    from pytest_memstream.machine import MemoryLimit
    from pytest_memstream.plugin.baselines import Baselines
    from pytest_memstream.plugin.recorder import Recorder
    from pytest_memstream.plugin.remote import Reach, RemoteHosts
    from pytest_memstream.plugin.scheduling import Scheduling
    from pytest_memstream.security import RunKeys

#: How long the controller waits for a finished worker's stream to drain: at most
#: DRAIN_TIMEOUT, and no longer than DRAIN_QUIET once nothing arrives from it.
DRAIN_TIMEOUT = 5.0
DRAIN_QUIET = 1.0
#: A crashed worker's last sequence number is unknown: wait until it is quiet.
CRASH_QUIET = 0.2
#: How long a crashed local worker's exit status may take to be there.
EXIT_WAIT = 1.0


def start_controller(config: pytest.Config, settings: Settings) -> Controller:
    """This run's controller, its sink's addresses bound (the sink itself comes later)."""
    ready: Callable[[Sink], None] = _no_alarm
    if settings.warn is not None:
        from pytest_memstream.plugin.warn import growth_alarm

        ready = growth_alarm(config, settings.warn)
    from pytest_memstream.security import RunKeys

    keys = RunKeys(os.urandom(32))
    bind = settings.bind
    if settings.advertise is not None and not settings.bind_given:
        from pytest_memstream.plugin.remote import bind_advertised

        bind = bind_advertised(settings.advertise)
    return Controller(config, settings, SinkStarter(keys, bind, ready), keys)


def _no_alarm(sink: Sink) -> None:
    pass


class Controller:
    """Owns the sink and the run's state; hands workers their spec; settles and reports."""

    def __init__(
        self, config: pytest.Config, settings: Settings, starter: SinkStarter, keys: RunKeys
    ) -> None:
        self.config = config
        self.settings = settings
        self.starter = starter
        self.keys = keys
        self.local: Recorder | None = None
        #: Why this process could not measure its own tests, if it could not.
        self.local_failure = ""
        self.report: Report | None = None
        self.problems: list[str] = []
        self.json_written = False
        self.html_written = False
        self.session_file: Path | None = None
        #: Workers on other hosts, as each was handed its address (plugin/remote.py).
        self.remote: RemoteHosts | None = None
        self._started = starter.began
        #: The OOM killer's kills in the run's cgroup so far (see _killed_how).
        self._oom_kills = 0
        #: The node ids xdist collected (the first worker's), for the scheduler's summary.
        self._collected: list[str] | None = None
        #: The selected tests that have not started (None until they are known): xdist
        #: says nothing when it stops giving out tests, so what is left at the end (and
        #: has no record either) never ran.
        self._unstarted: set[str] | None = None
        #: --memstream-max-total's budget and hooks (plugin/scheduling.py), if asked for.
        self.scheduling: Scheduling | None = None
        if settings.max_total is not None:
            from pytest_memstream.plugin.scheduling import Scheduling

            self.scheduling = Scheduling(self, settings.max_total)
        self.baselines: Baselines | None = None
        if settings.baselines_wanted:
            from pytest_memstream.plugin.baselines import Baselines

            self.baselines = Baselines(config, settings)

    @property
    def state(self) -> RunState:
        return self.starter.state

    # --- workers ------------------------------------------------------------------------

    def worker_spec(self, worker: str, reach: Reach | None = None) -> WorkerSpec:
        """What a worker needs to stream: only basic types (execnet sends it).

        Its own key only, never the run's secret: a worker cannot speak for another.
        A worker on another host streams where ``reach`` says (plugin/remote.py), which
        is never a loopback address of ours unless it runs on this very machine.
        """
        endpoint = self.starter.endpoint if reach is None else reach.endpoint
        self.starter.expect(worker, os.uname().nodename if reach is None else reach.host)
        return {
            "endpoint": endpoint,
            "server_key": self.keys.server.public.hex(),
            "key": self.keys.worker(worker).hex(),
            "worker": worker,
            "interval": self.settings.interval,
            "limit": self.settings.limit,
            "children": self.settings.children,
        }

    def _remote_hosts(self) -> RemoteHosts:
        if self.remote is None:
            from pytest_memstream.plugin.remote import RemoteHosts

            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            say = reporter.write_line if reporter is not None else _say_nothing
            self.remote = RemoteHosts(self.settings, self.starter, say)
        return self.remote

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_newgateway(self, gateway: Any) -> None:
        # Before xdist rsyncs or starts its own code there: one round trip, per gateway.
        if not getattr(gateway.spec, "popen", True):
            self._remote_hosts().gateway_up(gateway)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        gateway = node.gateway
        reach = None
        if not getattr(gateway.spec, "popen", True):
            reach = self._remote_hosts().reach(gateway)
        node.workerinput["memstream"] = self.worker_spec(gateway.id, reach)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        worker = node.gateway.id
        output = getattr(node, "workeroutput", None)
        fallback = output.get("memstream") if isinstance(output, dict) else None
        state = self.state.workers.get(worker)
        if state is not None and state.status not in ("expected", "running"):
            return  # already settled: xdist reports an interrupted worker twice
        if isinstance(fallback, dict) and fallback.get("error"):
            self.problems.append(f"{worker} {fallback['error']}; its tests ran unmeasured")
        elif isinstance(fallback, dict):
            reach = None if self.remote is None else self.remote.reaches.get(worker)
            self._drain(worker, int(fallback.get("last_seq", -1)), reach)
        else:
            self.state.wait_drained(worker, None, CRASH_QUIET, DRAIN_TIMEOUT)
        why = killed_by = None
        if error is not None:
            why, killed_by = self._killed_how(node, str(error))
        self.state.finish_worker(
            worker, fallback if isinstance(fallback, dict) else None, why, killed_by
        )

    def _killed_how(self, node: Any, error: str) -> tuple[str, str | None]:
        """``error`` told with what ended the worker, and that in a word, where known: a
        local worker's exit status (execnet's process) says the signal; the OOM killer's
        count (the run's cgroup's, else the machine's) says whether it was the OOM killer."""
        import signal

        popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
        code = None
        if popen is not None and hasattr(popen, "wait"):
            import subprocess

            # Its pipe closed as it ended: it is gone, or about to be.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = popen.wait(timeout=EXIT_WAIT)
        kills = self.memory_limit.oom_kills()
        if kills is not None and kills > self._oom_kills:
            self._oom_kills = kills
            if code is None or code == -signal.SIGKILL:
                where = self.memory_limit.source
                return f"{error}; killed by the OOM killer ({where} oom_kill {kills})", "oom-killer"
        if isinstance(code, int) and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"{error}; ended by {name}", name
        return error, None

    def _drain(self, worker: str, last_seq: int, reach: Reach | None = None) -> None:
        if self.state.wait_drained(worker, last_seq, DRAIN_QUIET, DRAIN_TIMEOUT):
            return
        if reach is not None and reach.endpoint and not self.state.workers[worker].received:
            self.problems.append(
                f"{worker} on {reach.host} never reached the sink at {reach.endpoint} (a "
                "firewall or a NAT between them?): no live figures, its tests' figures came "
                "from its own records at the end"
            )
        else:
            self.problems.append(
                f"the stream of {worker} stopped short of its end; "
                "what it lost was filled in from the worker's own records"
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        if self._collected is None:
            self._collected = list(ids)
        if self._unstarted is None:  # a replacement worker collects the same tests again
            self._unstarted = set(ids)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        # Not only the records: a test whose figures died with its worker (or that never
        # finished) has none, yet it ran.
        if self._unstarted:
            self._unstarted.discard(nodeid)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport) -> None:
        # xdist's report for the test a worker died in; it carries the worker node.  (Not
        # pytest_runtest_logreport: that would cost the controller a call per report.)
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        if gateway is not None:
            from pytest_memstream.protocol.stream import cut_nodeid

            self.state.note_crashed_test(gateway.id, cut_nodeid(crashitem))

    # --- the run ------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Known only now: xdist registers its DSession in a trylast pytest_configure.
        if not self.config.pluginmanager.has_plugin("dsession"):
            from pytest_memstream.plugin.worker import failure_output, start_failure, start_recorder

            try:
                self.local = start_recorder(self.config, self.worker_spec("main"))
            except Exception as exc:  # the tests run unmeasured; the report says why
                self.local_failure = start_failure(exc)
                self.problems.append(f"{self.local_failure}; the tests ran unmeasured")
                self.state.finish_worker("main", failure_output(self.local_failure), None)
            # No workers to start: the sink is built now, so that a viewer can attach
            # while the tests are being collected.
            self.starter.build_in_background()
            self.write_session_file()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Without xdist (under it the workers collect, and this hook does not run here).
        self._unstarted = {item.nodeid for item in session.items}
        if self.local_failure:
            from pytest_memstream.plugin.limits import check_unmeasured

            check_unmeasured(self.config, session.items, self.settings.limit, self.local_failure)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self) -> Generator[None, object, object]:
        # Here, after xdist's pytest_sessionstart started the workers: they take a few
        # hundred milliseconds to start and collect, and the sink is built meanwhile.
        announced = bool(self.starter.viewer_endpoints)
        if self.config.pluginmanager.has_plugin("dsession"):
            # Under xdist the session file is written here, once the workers are
            # starting: not in pytest_configure, where the whole run waits for it.
            self.write_session_file()
        self.starter.wait_for_sink()
        if announced and not self.starter.viewer_endpoints:
            self.write_session_file()  # it named viewer sockets that do not exist
        self.state.totals.headroom = self.memory_limit.headroom
        self.state.totals.limit = self.memory_limit.limit
        self._oom_kills = self.memory_limit.oom_kills() or 0
        return (yield)

    @functools.cached_property
    def memory_limit(self) -> MemoryLimit:
        """The memory the run may have: read when first needed, not before the workers
        start (a few files; every millisecond there is one the whole run waits)."""
        from pytest_memstream.machine import memory_limit

        return memory_limit()

    def pytest_report_header(self) -> list[str]:
        from pytest_memstream.plugin.handoff import header_lines

        return header_lines(self.config, self.settings, self.starter)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._finish_local()
        self.state.settle_unfinished()
        self._note_sink_problems()
        unmeasured = [w.id for w in self.state.workers.values() if w.unmeasured]
        not_run = self._not_run()
        stopped = _why_stopped(session, exitstatus, unmeasured, not_run)
        self.report = report = self._make_reports(stopped, not_run)
        failed = self._baselines_fail(report, stopped, unmeasured)
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _finish_local(self) -> None:
        """Without xdist: stop this process's own recorder, and settle worker ``main``."""
        if self.local is None:
            return
        fallback = self.local.close()
        self._drain("main", fallback["last_seq"])
        self.state.finish_worker("main", fallback, None)
        self.local = None

    def _make_reports(self, stopped: str, not_run: int) -> Report:
        """The report for the terminal summary; the JSON and HTML files if asked for."""
        settings = self.settings
        # The JSON file is written from the snapshot itself: only the HTML report, the
        # baselines and the JUnit XML's figures need every test's entry in the document.
        top = None if settings.every_test_wanted else (settings.sort, settings.top)
        # Imported here, not before xdist starts the workers: every millisecond of this
        # process's start-up is one the whole run waits.
        from pytest_memstream.collector.report import Snapshot

        snapshot = Snapshot(self.state, self._run_facts(stopped, not_run))
        report = snapshot.document(top)
        if self.scheduling is not None:
            self.scheduling.learn(snapshot.records)
        if settings.json_path is not None:
            try:
                snapshot.write_json(settings.json_path)
            except OSError as exc:
                self.problems.append(f"could not write the JSON report: {exc}")
            else:
                self.json_written = True
        if settings.html_path is not None:
            self._write_html(report, settings.html_path)
        return report

    def _baselines_fail(self, report: Report, stopped: str, unmeasured: list[str]) -> bool:
        """Compare and save baselines (--memstream-save/-compare/-fail-on-increase); True
        if the run must fail for it."""
        increased = self.baselines is not None and self.baselines.finish(report, not stopped)
        if unmeasured and self.settings.fail_on_increase is not None:
            self.problems.append(
                "--memstream-fail-on-increase could not check the tests that ran unmeasured: "
                "the run fails"
            )
            increased = True
        return increased

    def _note_sink_problems(self) -> None:
        for worker, reach in (self.remote.reaches if self.remote else {}).items():
            if reach.why:
                self.problems.append(
                    f"{worker} on {reach.host} was given no address to stream to: {reach.why} "
                    "(see --memstream-advertise): no live figures, its tests' figures came "
                    "from its own records at the end"
                )
        sink = self.starter.sink_if_started()
        if sink is not None and sink.internal_errors:
            self.problems.append(
                f"the sink thread hit {sink.internal_errors} internal error(s) (a bug: please "
                f"report it); the first:\n{sink.first_internal_error.rstrip()}"
            )

    def _write_html(self, report: Report, path: Path) -> None:
        # A picture is a nicety: whatever goes wrong with it costs a warning, never the run.
        try:
            from pytest_memstream.collector.html import write_html

            write_html(report, path, self.settings.sort, self.settings.top)
        except Exception as exc:
            self.problems.append(f"could not write the HTML report: {exc}")
        else:
            self.html_written = True

    def _not_run(self) -> int:
        """How many selected tests never ran: neither started nor left a record."""
        if not self._unstarted:
            return 0
        return len(self._unstarted - self.state.nodeids())

    def _figures_lost(self) -> list[str]:
        """Tests that ran (xdist logged their start) yet left no record: their figures died
        with their worker, in the socket's buffers when it was killed."""
        if self._collected is None:
            return []  # without xdist the recorder is in this process: nothing in flight
        with self.state.cond:
            died = any(w.status in ("crashed", "incomplete") for w in self.state.workers.values())
        if not died:
            return []  # a worker that finished handed its records over
        from pytest_memstream.protocol.stream import cut_nodeid

        unstarted = self._unstarted or set()
        recorded = self.state.nodeids()
        return [
            nodeid
            for nodeid in self._collected
            if nodeid not in unstarted and cut_nodeid(nodeid) not in recorded
        ]

    def _run_facts(self, stopped: str, not_run: int) -> dict[str, Any]:
        methods = sorted({w.method for w in self.state.workers.values() if w.method})
        return {
            "started": self._started,
            "duration": time.time() - self._started,
            "endpoint": self.starter.endpoint,
            "host": os.uname().nodename,
            "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": sys.version.split()[0],
            "pytest": pytest.__version__,
            "peak_method": methods[0] if len(methods) == 1 else ",".join(methods) or None,
            "complete": not stopped,
            "stopped": stopped or None,
            "not_run": not_run,
            "figures_lost": self._figures_lost(),
            "viewers": self._viewer_facts(),
            "limit": self.memory_limit.limit,
            "limit_source": self.memory_limit.source,
        }

    def _viewer_facts(self) -> dict[str, Any] | None:
        """What the viewers asked and were refused, None where they could not attach."""
        sink = self.starter.sink_if_started()
        fanout = None if sink is None else sink.fanout
        if fanout is None:
            return None
        return {
            "snapshots": fanout.snapshots,
            "rejected": dict(fanout.rejects),
            "dropped": fanout.dropped,
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        report = self.report
        if report is None:
            return
        from pytest_memstream.collector.report import summary_lines, summary_title

        verbosity = self.config.get_verbosity()
        settings = self.settings
        terminalreporter.write_sep("=", summary_title(report, settings.sort, settings.top))
        for line in summary_lines(report, settings.sort, settings.top, verbosity):
            terminalreporter.write_line(line)
        if self.json_written:
            terminalreporter.write_line(f"memstream: JSON report written to {settings.json_path}")
        if self.html_written:
            terminalreporter.write_line(f"memstream: HTML report written to {settings.html_path}")
        if self.scheduling is not None:
            scheduled = self.scheduling.summary_line(self._collected)
            if scheduled is not None:
                terminalreporter.write_line(scheduled)
        for problem in self.problems:
            terminalreporter.write_line(f"memstream: warning: {problem}", yellow=True)
        if self.baselines is not None:
            self.baselines.summary(terminalreporter)

    def pytest_unconfigure(self) -> None:
        if self.local is not None:
            self.local.close()
            self.local = None
        sink = self.starter.sink_if_started()
        if sink is not None:
            sink.stop()
            sink.state.forget()
        self.starter.remove_files()
        self.report = None
        if self.session_file is not None:
            self.session_file.unlink(missing_ok=True)

    # --- the viewer hand-off ------------------------------------------------------------

    def write_session_file(self) -> None:
        """Tell viewers where this run streams, with its secret (plugin/handoff.py)."""
        from pytest_memstream.plugin.handoff import write_session_file

        try:
            path = write_session_file(self.config, self.settings, self.starter, self.keys)
        except OSError as exc:
            self.problems.append(f"could not write the session file for viewers: {exc}")
            return
        if path is not None:
            self.session_file = path


def _why_stopped(
    session: pytest.Session, exitstatus: int, unmeasured: list[str], not_run: int
) -> str:
    """Why the run is not whole ("" if it is): no baseline is saved from such a run."""
    if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
        return "interrupted"
    if session.shouldfail or session.shouldstop:
        return str(session.shouldfail or session.shouldstop)
    if unmeasured:
        return f"tests ran unmeasured on {', '.join(unmeasured)}"
    if not_run:
        return "stopped early"  # as xdist does after too many crashed workers
    return ""


def _say_nothing(line: str) -> None:
    pass
