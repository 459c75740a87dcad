"""What every part shares: running pytest, medians, markdown tables, the machine's facts."""

from __future__ import annotations

import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: Every peer plugin that is installed in the bench environment, by its ``-p`` name.
PLUGINS = ("memstream", "memray", "monitor")


def disable_except(*active: str) -> list[str]:
    """``-p no:NAME`` for every plugin but ``active``: "off" means none of them runs."""
    out: list[str] = []
    for name in PLUGINS:
        if name not in active:
            out += ["-p", f"no:{name}"]
    return out


def pytest_command(args: Sequence[str]) -> list[str]:
    return [PYTHON, "-m", "pytest", *args]


def show_command(command: Sequence[str], cwd: Path | None = None) -> str:
    """A command as a user would type it (``python`` for this environment's interpreter)."""
    words = ["python" if word == PYTHON else word for word in command]
    text = shlex.join(words)
    return f"(cd {cwd} && {text})" if cwd is not None else text


@dataclass
class RunResult:
    seconds: float
    #: User + system CPU of the command and every process it waited for (xdist workers).
    cpu: float
    returncode: int
    output: str


def run(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> RunResult:
    """Run ``command`` to the end; its output is kept, so the terminal costs every run alike."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        list(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return RunResult(seconds, cpu, proc.returncode, proc.stdout)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**MISS**"


#: The overhead rule (issue 17): what is measured, its budget, and where it is measured.
RULE_INSTRUCTIONS = 1.08
RULE_TRIVIAL_WALL = 1.15
RULE_REAL_WALL = 1.03
RULE_PAIRS = 16


@dataclass
class RuleFigure:
    what: str
    figure: float
    budget: float
    detail: str

    def row(self) -> list[str]:
        return [
            self.what,
            f"{self.figure:.3f}×",
            f"≤ {self.budget}×",
            verdict(self.figure <= self.budget),
            self.detail,
        ]


#: Figures of the overhead rule found by the parts of this run, for the summary table.
RULE: list[RuleFigure] = []


def rule_table() -> str:
    """The overhead rule's figures of this run, PASS or MISS each."""
    table = Table("The overhead rule", ["figure", "measured", "budget", "verdict", "from"])
    for figure in RULE:
        table.add(*figure.row())
    if not RULE:
        table.notes.append(
            "No part of this run measures it (`--only overhead` and `instructions` do)."
        )
    table.notes.append(
        "The rule: the trivial suite under `-n 2` costs at most "
        f"{RULE_INSTRUCTIONS}× the instructions of the plugin off, and its wall time, the "
        f"median of at least {RULE_PAIRS} alternating pairs, at most {RULE_TRIVIAL_WALL}× (a "
        "guard against regressions: this machine cannot resolve a few percent); real suites "
        f"cost at most {RULE_REAL_WALL}× in wall time."
    )
    return table.markdown()


@dataclass
class Table:
    """A markdown table with a title and notes beneath it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        text = "\n".join(lines) + "\n"
        previous = ""
        for note in self.notes:
            if not note:
                continue
            # A note is a paragraph; consecutive list items stay one list.
            listed = note.startswith("- ") and previous.startswith("- ")
            text += ("\n" if listed else "\n\n" if previous else "\n") + note
            previous = note
        return text + ("\n" if self.notes else "")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    return "?"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def environment_lines() -> list[str]:
    """The machine and the versions, as markdown list items."""
    import zmq

    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "pytest_memstream")
    commit = _git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {_cpu_model()}, {os.cpu_count()} CPUs, {_memory()} RAM, "
        f"{platform.system()} {platform.release()}",
        f"- load average at start: {load_average()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- pytest-memstream {_version('pytest-memstream')} at {commit}",
        "- "
        + ", ".join(
            f"{dist} {_version(dist)}"
            for dist in (
                "pytest",
                "pytest-xdist",
                "pytest-memray",
                "memray",
                "pytest-monitor",
                "memory-profiler",
                "pyzmq",
                "msgpack",
                "psutil",
            )
        )
        + f", libzmq {zmq.zmq_version()}",
    ]
