"""The reports CI systems read, made once the run's own report is: the Markdown summary
(``--memstream-markdown``) and each test's figures in pytest's JUnit XML (``--junitxml``).

Registered beside the controller only when one of them is asked for.  Both come from the
report the controller built in its (tryfirst) ``pytest_sessionfinish``, so they show the
figures the summary and the JSON report show.  This plugin's ``pytest_sessionfinish`` is
trylast: after pytest's junitxml has written its file (in its own ``pytest_sessionfinish``),
and after the baselines were compared (the Markdown summary has the comparison).  What goes
wrong is a warning among the controller's, which pytest prints later, in the terminal
summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_memstream.plugin.controller import Controller


class CiReports:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.settings = controller.settings
        self.written: list[str] = []

    def pytest_report_header(self) -> list[str]:
        path = self.settings.markdown_path
        return [] if path is None else [f"memstream: Markdown summary to {path}"]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        report = self.controller.report
        if report is None:
            return
        if self.settings.markdown_path is not None:
            self._write_markdown(report, self.settings.markdown_path)
        if self.settings.junit_path is not None:
            self._complete_junit(report)

    def _write_markdown(self, report: dict[str, Any], path: Path) -> None:
        from pytest_memstream.collector.markdown import render_markdown, write_markdown

        settings = self.settings
        baselines = self.controller.baselines
        markdown = render_markdown(
            report,
            settings.sort,
            settings.top,
            comparison=None if baselines is None else baselines.comparison,
            baseline="" if baselines is None else baselines.label,
            offenders=() if baselines is None else baselines.offenders,
            fail_on=settings.fail_on_increase,
        )
        try:
            write_markdown(markdown, path)
        except OSError as exc:
            self.controller.problems.append(f"could not write the Markdown summary: {exc}")
        else:
            self.written.append(f"memstream: Markdown summary written to {path}")

    def _complete_junit(self, report: dict[str, Any]) -> None:
        from pytest_memstream.collector.junit import JUnitError, add_properties

        path = self.settings.junit_path
        assert path is not None
        prefix = self.controller.config.getoption("junitprefix", None)
        try:
            done, cases = add_properties(path, report, prefix)
        except FileNotFoundError:
            self.controller.problems.append(
                f"no JUnit XML file at {path} to add each test's figures to"
            )
        except (OSError, JUnitError, UnicodeDecodeError) as exc:
            self.controller.problems.append(
                f"could not add each test's figures to the JUnit XML file {path}: {exc}"
            )
        else:
            self.written.append(
                f"memstream: figures added to {done} of {cases} test cases in {path}"
            )

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.written:
            terminalreporter.write_line(line)
