"""Where baselines live, and what the controller does with them at the end of a run.

A baseline NAME is kept in the pytest cache under ``memstream/baselines/NAME``; a path
(``--memstream-save out/base.json``) is a file.  Saving adds the run to the runs the
baseline already keeps (the last ``--memstream-baseline-runs``).  The comparison itself is
``collector/baseline.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_memstream.collector.baseline import (
    CACHE_KEY,
    Baseline,
    BaselineError,
    Change,
    Comparison,
    check_baseline,
    compare,
    comparison_lines,
    comparison_title,
    increase_lines,
    run_count,
    with_run,
)
from pytest_memstream.collector.files import write_json
from pytest_memstream.collector.report import incomplete_reason
from pytest_memstream.plugin.options import DEFAULT_BASELINE, Settings


def _label(where: str | Path) -> str:
    return str(where) if isinstance(where, Path) else repr(where)


def read_raw(cache: pytest.Cache | None, where: str | Path) -> Any:
    """The baseline document at ``where`` (a file, or a name in ``cache``) as read, not yet
    checked; None where a name has none.  A file that is not there: FileNotFoundError."""
    if isinstance(where, Path):
        return json.loads(where.read_text(encoding="utf-8"))
    return None if cache is None else cache.get(CACHE_KEY + where, None)


class Baselines:
    """Loads, compares and saves baselines for one run; the lines to print, the verdict."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self._config = config
        self._settings = settings
        self.title = ""
        self.lines: list[str] = []
        self.failure: list[str] = []
        self.problems: list[str] = []
        #: Where the baseline went, said as the JSON and HTML reports say theirs.
        self.saved = ""
        #: What the comparison found, and against which baseline (for the Markdown summary).
        self.comparison: Comparison | None = None
        self.label = ""
        self.offenders: list[Change] = []

    def finish(self, report: dict[str, Any], complete: bool) -> bool:
        """Compare ``report`` with the baseline, then save it; True if the run must fail.

        A run that stopped early is compared but not saved: it would hide the tests it
        did not run from the next comparison.
        """
        settings = self._settings
        against = settings.compare
        if against is None and settings.fail_on_increase is not None:
            against = DEFAULT_BASELINE
        baseline = None
        if against is not None:
            baseline = self._load(against)
            if baseline is not None:
                self._compare(baseline, report, _label(against))
        if settings.save is not None and not complete:
            self.problems.append(
                f"baseline {_label(settings.save)} not saved: the run is not complete "
                f"({incomplete_reason(report['run'])})"
            )
        elif settings.save is not None:
            # The runs it keeps so far: the one just compared with, if that is the same.
            old = baseline if against == settings.save else self._load(settings.save, quiet=True)
            self._save(settings.save, with_run(old, report, settings.baseline_runs))
        return bool(self.failure)

    def _compare(self, baseline: Baseline, report: dict[str, Any], label: str) -> None:
        self.comparison = comparison = compare(baseline, report)
        self.label = label
        self.title = comparison_title(label, run_count(baseline))
        self.lines = comparison_lines(comparison, self._settings.top)
        if self._settings.fail_on_increase is not None:
            percent, min_size = self._settings.fail_on_increase
            self.offenders = comparison.increases(percent, min_size)
            if self.offenders:
                self.failure = increase_lines(self.offenders, percent, min_size, label)

    def _load(self, where: str | Path, quiet: bool = False) -> Baseline | None:
        """The baseline at ``where``, or None; ``quiet``: a missing one is no problem (it is
        about to be saved), and one that cannot be read is replaced."""
        try:
            if isinstance(where, Path) and where.exists() and not where.is_file():
                if not quiet:  # a FIFO would block the read
                    self.problems.append(f"cannot read baseline {where}: not a regular file")
                return None
            raw = read_raw(self._cache(), where)
            if raw is None:
                if not quiet:
                    self.problems.append(
                        f"no baseline {_label(where)} to compare with yet; "
                        "save one with --memstream-save"
                    )
                return None
            return check_baseline(raw)
        except FileNotFoundError:
            if not quiet:
                self.problems.append(f"no baseline file {where} to compare with yet")
        except (OSError, ValueError) as exc:  # BaselineError and bad JSON are ValueErrors
            kind = "" if isinstance(exc, BaselineError) else f"{type(exc).__name__}: "
            then = "; it is saved anew, with this run alone" if quiet else ""
            self.problems.append(f"cannot read baseline {_label(where)}: {kind}{exc}{then}")
        return None

    def _save(self, where: str | Path, baseline: Baseline) -> None:
        runs = f" ({run_count(baseline)} of at most {self._settings.baseline_runs} runs)"
        if isinstance(where, Path):
            try:
                write_json(where, baseline)
            except OSError as exc:
                self.problems.append(f"could not save the baseline to {where}: {exc}")
            else:
                self.saved = f"memstream: baseline saved to {where}{runs}"
            return
        cache = self._cache()
        if cache is None:
            self.problems.append(
                f"could not save baseline {where!r}: the pytest cache is off "
                "(-p no:cacheprovider); give a path instead"
            )
            return
        cache.set(CACHE_KEY + where, baseline)
        self.saved = f"memstream: baseline saved as {where!r} in the pytest cache{runs}"

    def _cache(self) -> pytest.Cache | None:
        cache: pytest.Cache | None = getattr(self._config, "cache", None)
        return cache

    def summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.write_sep("=", self.title)
            for line in self.lines:
                terminalreporter.write_line(line)
        for line in self.failure:
            terminalreporter.write_line(line, red=True, bold=line is self.failure[0])
        if self.saved:
            terminalreporter.write_line(self.saved)
        for problem in self.problems:
            terminalreporter.write_line(f"memstream: warning: {problem}", yellow=True)
