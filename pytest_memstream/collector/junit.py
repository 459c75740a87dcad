"""Each test's figures in a JUnit XML file that pytest's junitxml has written.

junitxml takes a test's properties from its teardown report, and what a test kept is only
known after it (where pytest lets go of its fixtures), so the figures cannot travel in
``user_properties``: the file is completed once it is written, from the run's report.
Each ``<testcase>`` whose ``classname`` and ``name`` are those junitxml makes of a
measured test's node id gets ``memstream_growth``, ``memstream_peak``,
``memstream_kept`` (not for a test that never finished its teardown) and
``memstream_tree_growth``, in bytes, inside its ``<properties>`` (made first in the test
case, where junitxml puts it).  The properties are added to the text as it is: every
other byte of the file stays as junitxml wrote it, and the result must parse.  Nothing
here imports pytest; the naming follows pytest 8's and 9's ``mangle_test_address``.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_memstream.collector.files import write_atomically
from pytest_memstream.collector.report import Report

#: (property, the test's field) in the order they are written.
PROPERTIES = (
    ("memstream_growth", "growth"),
    ("memstream_peak", "peak_rss"),
    ("memstream_kept", "kept"),
    ("memstream_tree_growth", "tree_growth"),
)
_VALUE = r"""(?:"[^"]*"|'[^']*')"""
_TESTCASE = re.compile(rf"<testcase((?:\s+[^\s=/>]+\s*=\s*{_VALUE})*)\s*(/?)>")
_ATTRIBUTE = re.compile(r"""([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_PROPERTIES = re.compile(r"\s*<properties\s*(/?)>")
#: What junitxml writes in a name's place for a character XML cannot hold (its
#: bin_xml_escape, #x7F included).
_ILLEGAL = re.compile(
    "[^\u0009\u000a\u000d\u0020-\u007e\u0080-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


class JUnitError(ValueError):
    """The file is not one that can be completed; the message says why (it is left as is)."""


def testcase_names(nodeid: str, prefix: str | None) -> set[tuple[str, str]]:
    """The ``(classname, name)`` junitxml gives a test: under pytest 9 the path is what
    comes before the first ``::``; under pytest 8, before the first ``[`` (the two
    differ only for a path with a ``[`` in it)."""
    found = set()
    for names in (_names_since_9(nodeid), _names_before_9(nodeid)):
        names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
        classes = names[:-1] if not prefix else [prefix, *names[:-1]]
        found.add((".".join(classes), _ILLEGAL.sub(_visible, names[-1])))
    return found


def _names_since_9(nodeid: str) -> list[str]:
    path, sep, tail = nodeid.partition("::")
    if not sep:
        return [path]
    name, bracket, params = tail.partition("[")
    names = [path, *name.split("::")]
    if bracket:
        names[-1] += f"[{params.removesuffix(']')}]"
    return names


def _names_before_9(nodeid: str) -> list[str]:
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[-1] += bracket + params
    return names


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"#x{code:02X}" if code <= 0xFF else f"#x{code:04X}"


def figures_by_name(report: Report, prefix: str | None) -> dict[tuple[str, str], list[str]]:
    """``(classname, name) -> <property> elements`` for every test the report has figures
    of.  A test that ran more than once (``--dist each``) gets its largest growth, as in
    a baseline."""
    chosen: dict[str, dict[str, Any]] = {}
    for test in report["tests"]:
        if not test["phases"]:  # known only from xdist's crash report: no figures
            continue
        known = chosen.get(test["nodeid"])
        if known is None or test["growth"] > known["growth"]:
            chosen[test["nodeid"]] = test
    found = {}
    for nodeid, test in chosen.items():
        elements = [
            f'<property name="{name}" value="{int(test[field])}" />'
            for name, field in PROPERTIES
            if test.get(field) is not None
        ]
        for key in testcase_names(nodeid, prefix):
            found[key] = elements
    return found


def add_properties(path: Path, report: Report, prefix: str | None) -> tuple[int, int]:
    """Add the report's figures to the test cases of the JUnit XML file at ``path``;
    ``(test cases completed, test cases in the file)``.  OSError if it cannot be read or
    written, JUnitError if it is not what junitxml writes (then it is left as it is)."""
    original = path.read_text(encoding="utf-8")
    cases = list(_testcases(original))
    try:
        parsed = [(c.get("classname", ""), c.get("name", "")) for c in _parse(original)]
    except ET.ParseError as exc:
        raise JUnitError(f"it is not well-formed XML ({exc})") from None
    if parsed != [key for _, key in cases]:
        raise JUnitError("its test cases are not written as junitxml writes them")
    figures = figures_by_name(report, prefix)
    pieces, done, last = [], 0, 0
    for match, key in cases:
        elements = figures.get(key)
        if not elements:
            continue
        done += 1
        pieces.append(original[last : match.start()])
        last = _insert(original, match, "".join(elements), pieces)
    pieces.append(original[last:])
    completed = "".join(pieces)
    if done:
        try:
            _parse(completed)
        except ET.ParseError as exc:  # a bug here, not in the file: leave the file alone
            raise JUnitError(f"completing it would have broken it ({exc})") from None
        write_atomically(path, [completed])
    return done, len(cases)


def _parse(text: str) -> list[ET.Element]:
    return list(ET.fromstring(text).iter("testcase"))


def _testcases(text: str) -> Iterator[tuple[re.Match[str], tuple[str, str]]]:
    for match in _TESTCASE.finditer(text):
        attributes = {
            name: html.unescape(double if double is not None else single)
            for name, double, single in _ATTRIBUTE.findall(match.group(1))
        }
        yield match, (attributes.get("classname", ""), attributes.get("name", ""))


def _insert(text: str, case: re.Match[str], elements: str, pieces: list[str]) -> int:
    """Append the test case's start tag with ``elements`` in its ``<properties>`` to
    ``pieces``; where the original text goes on from."""
    if case.group(2):  # <testcase ... />: nothing inside yet
        pieces.append(f"<testcase{case.group(1)}><properties>{elements}</properties></testcase>")
        return case.end()
    pieces.append(case.group(0))
    existing = _PROPERTIES.match(text, case.end())
    if existing is None:
        pieces.append(f"<properties>{elements}</properties>")
        return case.end()
    if existing.group(1):  # <properties />
        pieces.append(f"{text[case.end() : existing.start(1)].rstrip()}>{elements}</properties>")
        return existing.end()
    # After what the test recorded itself (record_property), before the end of the list.
    end = text.index("</properties>", existing.end())
    pieces.append(text[case.end() : end] + elements)
    return end
