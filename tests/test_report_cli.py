"""``memstream report``: the summary of a saved run, its HTML, and files it must refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MEMORY_TESTS, RunMemstream
from test_html import synthetic_report


def memstream(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_memstream.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary(output: str) -> list[str]:
    """The memstream summary a run printed: its title and lines, up to the footer."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "memstream: top" in line)
    end = next(
        i
        for i in range(start, len(lines))
        if lines[i].startswith("memstream: ") and "tests on" in lines[i]
    )
    return [lines[start].strip("= "), *lines[start + 1 : end + 1]]


@pytest.fixture
def saved_run(pytester: pytest.Pytester, run_memstream: RunMemstream) -> tuple[Path, str]:
    pytester.makepyfile(test_memory=MEMORY_TESTS)
    run = run_memstream("-n", "2", "--memstream-top=3", "--memstream-sort=peak")
    return pytester.path / "memstream.json", run.output


def test_prints_what_the_run_printed(saved_run: tuple[Path, str]) -> None:
    path, output = saved_run
    done = memstream("report", path, "--top", "3", "--sort", "peak")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == summary(output)
    assert done.stdout.startswith("memstream: top 3 tests by peak RSS\n")


def test_top_sort_and_verbose(saved_run: tuple[Path, str]) -> None:
    path, _ = saved_run
    report = json.loads(path.read_text())
    done = memstream("report", path, "--top", "0", "--sort", "kept", "-v")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "memstream: top 6 tests by memory kept"
    assert lines[2].endswith("test_memory.py::test_keeps")
    for worker in report["workers"]:
        assert any(line.startswith(f"  {worker['id']} ") for line in lines)
    quiet = memstream("report", path, "-q", "--top", "1")
    assert len(quiet.stdout.splitlines()) == 3  # title, one short row, footer


def test_html_from_a_saved_run(saved_run: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = saved_run
    page = tmp_path / "out" / "run.html"
    done = memstream("report", path, "--html", page, "--top", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"memstream: HTML report written to {page}"
    text = page.read_text()
    assert "Top 2 tests by memory growth" in text
    assert "test_memory.py::test_spike" in text


def test_crashed_test_from_a_saved_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(synthetic_report(12)))
    done = memstream("report", path)
    assert done.returncode == 0, done.stderr
    assert "memstream: worker gw1 crashed while running tests/test_boom.py::test_oom" in done.stdout


def _broken(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name: (file content, what the error must say)."""
    good = json.dumps(synthetic_report(10))
    report = synthetic_report(4, crash=False)
    del report["tests"][2]["growth"]
    wrong_type = synthetic_report(4, crash=False)
    wrong_type["workers"] = {"gw0": {}}
    bad_samples = synthetic_report(4)
    bad_samples["tests"][-1]["samples"] = [[1.0]]
    bad_limit = synthetic_report(4)
    bad_limit["tests"][-1]["limit"] = {"size": "200M", "on": "growth"}
    bad_messages = synthetic_report(4)
    bad_messages["run"]["messages"] = "many"
    return {
        "bad-limit": (json.dumps(bad_limit), '"tests"[4].limit is not {"size": bytes'),
        "bad-messages": (json.dumps(bad_messages), '"run".messages is a string'),
        "truncated": (good[: len(good) // 2], "truncated"),
        "empty": ("", "the file is empty"),
        "not-json": ("memstream rocks\n", "not JSON"),
        "foreign": (
            json.dumps({"schema": "pytest-memstream-baseline/1", "tests": {}}),
            "schema 'pytest-memstream-baseline/1' is not 'pytest-memstream/1'",
        ),
        "no-schema": (json.dumps({"tests": []}), 'no "schema" field'),
        "a-list": ("[1, 2]", "the JSON is a list"),
        "missing-field": (json.dumps(report), '"tests"[2] has no "growth"'),
        "wrong-shape": (json.dumps(wrong_type), '"workers" is an object, expected a list'),
        "bad-samples": (json.dumps(bad_samples), "samples is not a list of [time, rss] pairs"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "empty",
        "not-json",
        "foreign",
        "no-schema",
        "a-list",
        "missing-field",
        "wrong-shape",
        "bad-samples",
        "bad-limit",
        "bad-messages",
    ],
)
def test_broken_file_is_one_clear_line(tmp_path: Path, case: str) -> None:
    content, message = _broken(tmp_path)[case]
    path = tmp_path / f"{case}.json"
    path.write_text(content)
    done = memstream("report", path, "--html", tmp_path / "page.html")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"memstream report: {path}: ")
    assert message in done.stderr
    assert not (tmp_path / "page.html").exists()


def test_truncated_real_report(saved_run: tuple[Path, str]) -> None:
    path, _ = saved_run
    text = path.read_text()
    path.write_text(text[: len(text) * 2 // 3])
    done = memstream("report", path)
    assert done.returncode == 2
    assert (
        done.stderr == f"memstream report: {path}: the JSON ends early: the file is "
        "truncated (half-written?)\n"
    )


def test_missing_file(tmp_path: Path) -> None:
    done = memstream("report", tmp_path / "nowhere.json")
    assert done.returncode == 2
    assert "cannot read it (FileNotFoundError" in done.stderr


@pytest.mark.slow
def test_prints_a_crash_as_the_run_did(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    from test_faults import AFTER_TESTS, CRASH_TESTS, KILLS

    pytester.makepyfile(
        test_crashy=CRASH_TESTS.replace("{kill}", KILLS["os_exit"]), test_zafter=AFTER_TESTS
    )
    run = run_memstream("-n", "2", "--memstream-interval=0.05", "-v")
    done = memstream("report", pytester.path / "memstream.json", "-v")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == summary(run.output)
    assert any(
        " crashed while running test_crashy.py::test_crash " in line
        for line in done.stdout.splitlines()
    )
