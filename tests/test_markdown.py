"""--memstream-markdown and ``memstream report --markdown``: a summary GitHub renders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from runs import RunMemstream
from test_html import synthetic_report
from test_report_cli import memstream

from pytest_memstream.collector.markdown import render_markdown

MiB = 1 << 20

ODD_IDS = """
import pytest

MiB = 1 << 20


@pytest.mark.parametrize("name", ["a|b", "c`d", "e``f|"], ids=["a|b", "c`d", "e``f|"])
def test_odd(name):
    data = b"o" * (30 * MiB)
    del data


def test_hungry():
    data = b"h" * ({hungry} * MiB)
    del data
"""


def rendered(markdown: str) -> list[list[list[str]]]:
    """Each table GitHub-flavoured Markdown renders: rows of cells' text, header first."""
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    tables = []
    for table in re.findall(r"<table>(.*?)</table>", html, re.S):
        assert "<thead>" in table  # a header row
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
        tables.append(
            [
                [_text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
                for row in rows
            ]
        )
    return tables


def _text(cell: str) -> str:
    plain = re.sub(r"<[^>]+>", "", cell)
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&")):
        plain = plain.replace(entity, char)
    return plain


def assert_no_control_characters(text: str) -> None:
    assert not [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]


def test_the_summary_renders_as_tables(
    pytester: pytest.Pytester, run_memstream: RunMemstream
) -> None:
    pytester.makepyfile(test_odd=ODD_IDS.replace("{hungry}", "10"))
    run_memstream("-n", "2", "--memstream-save=base.json")
    pytester.makepyfile(test_odd=ODD_IDS.replace("{hungry}", "80"))
    summary = pytester.path / "out" / "summary.md"
    run = run_memstream(
        "-n",
        "2",
        "--memstream-compare=base.json",
        "--memstream-fail-on-increase=50",
        f"--memstream-markdown={summary}",
        "--memstream-top=0",
    )
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    run.result.stdout.fnmatch_lines(
        [
            f"memstream: Markdown summary to {summary}",
            f"memstream: Markdown summary written to {summary}",
        ]
    )
    markdown = summary.read_text()
    assert_no_control_characters(markdown)
    assert markdown.startswith("### memstream: top 4 tests by memory growth\n")
    top, compared = rendered(markdown)
    assert top[0] == ["growth", "peak", "kept", "worker", "phase", "test"]
    assert [row[-1] for row in top[1:]] == [
        "test_odd.py::test_hungry",
        *sorted(
            (f"test_odd.py::test_odd[{i}]" for i in ("a|b", "c`d", "e``f|")),
            key=lambda nodeid: -run.test(nodeid)["growth"],
        ),
    ]
    hungry = run.test("test_odd.py::test_hungry")
    assert top[1][:3] == [
        f"+{hungry['growth'] / MiB:.1f}M",
        f"{hungry['peak_rss'] / MiB:.1f}M",
        top[1][2],
    ]
    assert compared[0] == ["baseline", "now", "change", "%", "test"]
    assert compared[1][-1] == "test_odd.py::test_hungry"
    assert len(compared) == 5
    assert "**memstream: FAILED: 1 test grew by more than 50% and more than 3.0M" in markdown
    assert "- `test_odd.py::test_hungry`: growth +" in markdown
    assert markdown.rstrip().splitlines()[-1].startswith("memstream: 4 tests on 2 workers")


def test_ini_key_and_a_path_that_cannot_be_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    pytester.makeini("[pytest]\nmemstream = true\nmemstream_markdown = summary.md\n")
    assert pytester.runpytest_subprocess().ret == pytest.ExitCode.OK
    assert (pytester.path / "summary.md").read_text().startswith("### memstream: top 1 test")
    (pytester.path / "adir").mkdir()
    refused = pytester.runpytest_subprocess("--memstream-markdown=adir")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(
        ["*memstream: --memstream-markdown got 'adir': it is a directory*"]
    )


def test_memstream_report_writes_or_prints_it(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(synthetic_report(12)))
    printed = memstream("report", path, "--markdown", "-")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("### memstream: top 5 tests by memory growth\n")
    assert "memstream: top 5" not in printed.stderr  # nothing but Markdown on stdout
    assert "**Crashed workers**" in printed.stdout
    assert "- worker `gw1` crashed while running `tests/test_boom.py::test_oom`" in printed.stdout
    written = tmp_path / "summary.md"
    done = memstream("report", path, "--markdown", written)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"memstream: Markdown summary written to {written}"
    assert written.read_text() == printed.stdout


def test_what_a_node_id_holds_is_shown_never_taken_as_markdown() -> None:
    report = synthetic_report(3, workers=1, crash=False)
    odd = ["t.py::x[\x1b[31m|`*_<b>]", "t.py::`tick`", "t.py::line\u2028break"]
    for test, nodeid in zip(report["tests"], odd, strict=True):
        test["nodeid"] = nodeid
        test["growth"] = 10 * MiB
    markdown = render_markdown(report, top=0)
    assert_no_control_characters(markdown)
    assert "\u2028" not in markdown
    (table,) = rendered(markdown)
    assert sorted(row[-1] for row in table[1:]) == sorted(
        ["t.py::x[\\x1b[31m|`*_<b>]", "t.py::`tick`", "t.py::line\\u2028break"]
    )
