"""``memstream report``: the summary of a saved run, its HTML, and files it must refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runs import MEMORY_TESTS, RunMemstream
from test_html import synthetic_report


def memstream(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_memstream.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
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
            "schema 'pytest-memstream-baseline/1' is not one this version of pytest-memstream "
            "reads (pytest-memstream/1, pytest-memstream/2)",
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


# A report as pytest-memstream wrote it before schema /2 (commit 0a2286f): -n 2, a test
# that passed, an xfail (then "skipped"), a test whose worker died mid-call (its "kept" a
# number that meant nothing), and one that only xdist's crash report named (then
# "fallback", as if recovered).
REPORT_1 = """{"schema":"pytest-memstream/1","run":{"started":1796579068.4335752,\
"duration":2.5,"endpoint":"tcp://127.0.0.1:35687","platform":"Linux 6.1.0 x86_64",\
"python":"3.11.7","pytest":"9.0.1","peak_method":"hwm","complete":true,"stopped":null,\
"tests":4,"messages":9,"frames":4,"rejected":{}},"workers":[\
{"id":"gw0","pid":32339,"status":"crashed","tests":2,"messages":6,"lost":0,"dropped":0,\
"recovered":0,"unrecoverable":0,"max_rss":356515840,"peak_method":"hwm",\
"crashed_test":"test_v1.py::test_hungry","error":"Not properly terminated"},\
{"id":"gw1","pid":0,"status":"crashed","tests":1,"messages":0,"lost":0,"dropped":0,\
"recovered":0,"unrecoverable":0,"max_rss":0,"peak_method":"",\
"crashed_test":"test_v1.py::test_dies","error":"Not properly terminated"},\
{"id":"gw2","pid":32355,"status":"complete","tests":1,"messages":3,"lost":0,"dropped":0,\
"recovered":0,"unrecoverable":0,"max_rss":40161280,"peak_method":"hwm",\
"crashed_test":null,"error":null}],"tests":[\
{"nodeid":"test_v1.py::test_passes","worker":"gw0","index":0,"outcome":"passed",\
"rss_start":40067072,"rss_end":40071168,"peak_rss":61038592,"growth":20971520,\
"kept":4096,"peak_phase":"call","peak_method":"hwm","source":"stream",\
"started":1796579068.91,"finished":1796579068.93,"phases":{\
"setup":{"rss_before":40067072,"rss_after":40067072,"peak_rss":40067072,"duration":0.0002},\
"call":{"rss_before":40067072,"rss_after":40071168,"peak_rss":61038592,"duration":0.0101},\
"teardown":{"rss_before":40071168,"rss_after":40071168,"peak_rss":40071168,"duration":0.0001}}},\
{"nodeid":"test_v1.py::test_xfails","worker":"gw2","index":0,"outcome":"skipped",\
"rss_start":40067072,"rss_end":40161280,"peak_rss":40161280,"growth":94208,"kept":94208,\
"peak_phase":"teardown","peak_method":"hwm","source":"stream","started":1796579069.5,\
"finished":1796579069.52,"phases":{\
"setup":{"rss_before":40067072,"rss_after":40067072,"peak_rss":40067072,"duration":0.0002},\
"call":{"rss_before":40067072,"rss_after":40067072,"peak_rss":40067072,"duration":0.0001},\
"teardown":{"rss_before":40067072,"rss_after":40161280,"peak_rss":40161280,"duration":0.0001}}},\
{"nodeid":"test_v1.py::test_hungry","worker":"gw0","index":1,"outcome":"crashed",\
"rss_start":40071168,"rss_end":356515840,"peak_rss":356515840,"growth":316444672,\
"kept":316444672,"peak_phase":"call","peak_method":"sampled","source":"stream",\
"started":1796579068.94,"finished":1796579069.2,"phases":{\
"setup":{"rss_before":40071168,"rss_after":40071168,"peak_rss":40071168,"duration":0.0002},\
"call":{"rss_before":40071168,"rss_after":356515840,"peak_rss":356515840,"duration":0.0}},\
"samples":[[1796579069.1,198180864],[1796579069.2,356515840]],"climb_rate":1581672960.0},\
{"nodeid":"test_v1.py::test_dies","worker":"gw1","index":0,"outcome":"crashed",\
"rss_start":0,"rss_end":0,"peak_rss":0,"growth":0,"kept":0,"peak_phase":"",\
"peak_method":"sampled","source":"fallback","started":1796579069.07,\
"finished":1796579069.07,"phases":{},"samples":[],"climb_rate":0.0}]}
"""


def test_a_report_of_schema_1_reads_as_schema_2(tmp_path: Path) -> None:
    path = tmp_path / "run-1.json"
    path.write_text(REPORT_1)
    page = tmp_path / "run-1.html"
    done = memstream("report", path, "--top", "0", "--html", page)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "memstream: top 4 tests by memory growth"
    # What a crashed test kept was never known: blank, as a /2 report says it.
    assert lines[2].split() == [
        "+301.8M",
        "340.0M",
        "gw0",
        "call",
        "test_v1.py::test_hungry",
        "[crashed]",
    ]
    assert lines[3].split()[:3] == ["+20.0M", "58.2M", "+4.0K"]
    # Named by xdist alone: nothing was recovered, and it says so.
    assert lines[5].split() == [
        "gw1", "?", "test_v1.py::test_dies", "[crashed,", "no", "figures", "reached", "the",
        "controller]",
    ]  # fmt: skip
    assert "recovered]" not in done.stdout
    assert (
        "memstream: worker gw1 crashed while running test_v1.py::test_dies "
        "(phase ?, no figures reached the controller)" in lines
    )
    assert lines[-2].startswith("memstream: 4 tests on 3 workers, 9 messages, 0 lost, ")
    assert "test_v1.py::test_hungry" in page.read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "pytest-memstream/3"}, "schema 'pytest-memstream/3' is not one this version"),
        ({"kept": None}, '"tests"[3].kept is null, not what a report holds'),
        ({"outcome": "xfailed"}, "\"tests\"[3].outcome 'xfailed' is not an outcome of "),
    ],
)
def test_what_no_version_wrote_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    document = json.loads(REPORT_1)
    if "schema" in change:
        document |= change
    else:
        document["tests"][3] |= change  # /1 had no null kept, no xfailed outcome
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    done = memstream("report", path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"memstream report: {path}: "), done.stderr
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
