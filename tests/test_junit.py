"""With --junitxml, each test case carries the report's figures as properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from runs import RunMemstream

from pytest_memstream.collector.junit import add_properties

PROJECT = {
    "test_top": """
import pytest

MiB = 1 << 20


def test_plain():
    data = b"p" * (40 * MiB)
    del data


@pytest.mark.parametrize("value", [1.5, "a.b", "x[y]"], ids=["1.5", "a.b", "x[y]"])
def test_ids(value):
    pass


def test_recorded(record_property):
    record_property("own", "kept as it was")


def test_fails():
    assert False


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
""",
    "sub/deeper/test_deep": """
class TestDeep:
    def test_method(self):
        data = b"d" * (20 << 20)
        del data

    class TestInner:
        def test_inner(self):
            pass
""",
}

#: Node id -> the (classname, name) that junitxml gives it (without a prefix).
NAMES = {
    "test_top.py::test_plain": ("test_top", "test_plain"),
    "test_top.py::test_ids[1.5]": ("test_top", "test_ids[1.5]"),
    "test_top.py::test_ids[a.b]": ("test_top", "test_ids[a.b]"),
    "test_top.py::test_ids[x[y]]": ("test_top", "test_ids[x[y]]"),
    "test_top.py::test_recorded": ("test_top", "test_recorded"),
    "test_top.py::test_fails": ("test_top", "test_fails"),
    "test_top.py::test_skipped": ("test_top", "test_skipped"),
    "sub/deeper/test_deep.py::TestDeep::test_method": (
        "sub.deeper.test_deep.TestDeep",
        "test_method",
    ),
    "sub/deeper/test_deep.py::TestDeep::TestInner::test_inner": (
        "sub.deeper.test_deep.TestDeep.TestInner",
        "test_inner",
    ),
}


def properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


@pytest.mark.parametrize("xdist", [["-p", "no:xdist"], ["-n", "2"]], ids=["single", "xdist"])
@pytest.mark.parametrize("prefix", [None, "ci.linux"])
def test_every_test_case_carries_the_reports_figures(
    pytester: pytest.Pytester, run_memstream: RunMemstream, xdist: list[str], prefix: str | None
) -> None:
    for name, source in PROJECT.items():
        path = pytester.path / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    junit = pytester.path / "out" / "junit.xml"
    run = run_memstream(
        *xdist, f"--junitxml={junit}", *([f"--junitprefix={prefix}"] if prefix else [])
    )
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    run.result.stdout.fnmatch_lines([f"memstream: figures added to 9 of 9 test cases in {junit}"])
    root = ET.parse(junit).getroot()  # still XML, and as junitxml makes it
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("9", "1", "1")
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert len(cases) == 9
    for nodeid, (classname, name) in NAMES.items():
        test = run.test(nodeid)
        case = cases[(f"{prefix}.{classname}" if prefix else classname, name)]
        expected = {
            "memstream_growth": str(test["growth"]),
            "memstream_peak": str(test["peak_rss"]),
            "memstream_kept": str(test["kept"]),
            "memstream_tree_growth": str(test["tree_growth"]),
        }
        if nodeid.endswith("test_recorded"):
            expected["own"] = "kept as it was"
        assert properties(case) == expected, nodeid
        # One <properties>, first in the test case, where junitxml puts its own.
        assert [child.tag for child in case][:1] == ["properties"]
        assert len(case.findall("properties")) == 1
    assert (
        int(
            properties(cases[(f"{prefix}.test_top" if prefix else "test_top", "test_plain")])[
                "memstream_growth"
            ]
        )
        > 35 << 20
    )
    failed = cases[(f"{prefix}.test_top" if prefix else "test_top", "test_fails")]
    assert failed.find("failure") is not None


def test_nothing_else_in_the_file_changes(pytester: pytest.Pytester) -> None:
    # A file junitxml wrote (without the plugin), completed from a report of two of its
    # four tests: the other two get nothing, and every other byte stays.
    pytester.makepyfile(
        test_x="""
import pytest

def test_a(record_property):
    record_property("mine", 1)
    print("out <&> put")

def test_b():
    assert False, "a 'quoted' <failure>"

@pytest.mark.skip
def test_c():
    pass

def test_d():
    pass
"""
    )
    junit = pytester.path / "junit.xml"
    pytester.runpytest_subprocess(f"--junitxml={junit}", "-o", "junit_logging=all")
    before = junit.read_text()
    report = {
        "tests": [
            _entry("test_x.py::test_a", 5, None),
            _entry("test_x.py::test_c", 7, 0),
            _entry("test_x.py::test_gone", 9, 0),
        ]
    }
    assert add_properties(junit, report, None) == (2, 4)
    after = junit.read_text()
    a = '<property name="memstream_growth" value="5" />'
    a += '<property name="memstream_peak" value="105" />'
    a += '<property name="memstream_tree_growth" value="5" />'  # no kept: it never finished
    c = '<properties><property name="memstream_growth" value="7" />'
    c += (
        '<property name="memstream_peak" value="107" /><property name="memstream_kept" value="0" />'
    )
    c += '<property name="memstream_tree_growth" value="7" /></properties>'
    assert after.replace(a, "", 1).replace(c, "", 1) == before
    assert after.count("<properties>") == before.count("<properties>") + 1
    cases = {c.get("name"): c for c in ET.fromstring(after).iter("testcase")}
    assert properties(cases["test_a"])["mine"] == "1"
    assert properties(cases["test_a"])["memstream_growth"] == "5"
    assert properties(cases["test_b"]) == {}
    assert properties(cases["test_d"]) == {}


def _entry(nodeid: str, growth: int, kept: int | None) -> dict[str, object]:
    return {
        "nodeid": nodeid,
        "growth": growth,
        "peak_rss": growth + 100,
        "kept": kept,
        "tree_growth": growth,
        "phases": {"setup": [0, 0, 0, 0.0]},
    }


SPOILER = """
import os
import pytest


class Spoil:
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        # After junitxml wrote the file, before the plugin completes it: pluggy calls the
        # trylast implementations registered earlier first.
        if not hasattr(session.config, "workerinput"):
            {action}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.pluginmanager.register(Spoil())
"""


@pytest.mark.parametrize(
    ("action", "warning"),
    [
        ("os.remove('junit.xml')", "memstream: warning: no JUnit XML file at */junit.xml to add*"),
        (
            "open('junit.xml', 'w').write('<testsuites><testcase')",
            "memstream: warning: could not add each test's figures to the JUnit XML file "
            "*/junit.xml: it is not well-formed XML*",
        ),
    ],
    ids=["missing", "not-xml"],
)
def test_a_file_that_cannot_be_completed_is_a_warning(
    pytester: pytest.Pytester, action: str, warning: str
) -> None:
    pytester.makeconftest(SPOILER.replace("{action}", action))
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("--memstream", "--junitxml=junit.xml", "-n", "2")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([warning])
    assert "figures added" not in "\n".join(result.outlines)


def test_without_memstream_the_file_is_junitxmls_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess("--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.OK
    assert "memstream" not in (pytester.path / "junit.xml").read_text()
