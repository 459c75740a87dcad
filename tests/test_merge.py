"""``memstream report A.json B.json ...``: the shards of one suite merged into one report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runs import RunMemstream
from test_html import synthetic_report
from test_report_cli import memstream

MiB = 1 << 20

SHARD_FILES = {
    "test_alpha": "def test_a1():\n    data = b'a' * (30 << 20)\n\n\ndef test_a2():\n    pass\n",
    "test_beta": "def test_b1():\n    data = b'b' * (60 << 20)\n\n\ndef test_b2():\n    pass\n",
    "test_gamma": "import pytest\n\n\n@pytest.mark.parametrize('n', [1, 2, 3])\n"
    "def test_g(n):\n    data = b'g' * (n << 20)\n",
}


def test_three_shards_merged_equal_one_run(
    pytester: pytest.Pytester, run_memstream: RunMemstream, tmp_path: Path
) -> None:
    pytester.makepyfile(**SHARD_FILES)
    whole = run_memstream("-n", "2").report
    shards = []
    for n, name in enumerate(SHARD_FILES, 1):
        run_memstream("-n", "2", f"{name}.py")
        shard = pytester.path / f"shard{n}" / "memstream.json"  # as CI artefacts come
        shard.parent.mkdir()
        (pytester.path / "memstream.json").rename(shard)
        shards.append(shard)
    merged_path = tmp_path / "merged.json"
    page = tmp_path / "merged.html"
    done = memstream("report", *shards, "--top", "0", "--json", merged_path, "--html", page)
    assert done.returncode == 0, done.stderr
    merged = json.loads(merged_path.read_text())

    assert sorted(t["nodeid"] for t in merged["tests"]) == sorted(
        t["nodeid"] for t in whole["tests"]
    )
    assert merged["run"]["tests"] == whole["run"]["tests"] == 7
    assert merged["run"]["complete"] is True
    assert {t["worker"].split("/")[0] for t in merged["tests"]} == {"shard1", "shard2", "shard3"}
    assert all(w["id"].split("/")[1] in ("gw0", "gw1") for w in merged["workers"])
    assert sum(w["tests"] for w in merged["workers"]) == 7
    worker_ids = {w["id"] for w in merged["workers"]}
    assert {t["worker"] for t in merged["tests"]} <= worker_ids
    by_id = {t["nodeid"]: t for t in merged["tests"]}
    assert by_id["test_beta.py::test_b1"]["growth"] > 55 * MiB
    lines = done.stdout.splitlines()
    assert lines[0] == "memstream: top 7 tests by memory growth"
    assert lines[2].endswith("test_beta.py::test_b1")
    assert lines[2].split()[3].startswith("shard2/gw")
    assert lines[lines.index("memstream: merged 3 shards:") + 1].split()[:3] == [
        "shard1",
        "2",
        "tests",
    ]
    footer = next(line for line in lines if "tests on" in line)
    assert footer.startswith("memstream: 7 tests on 6 workers, ")
    assert ", 0 lost, 0 recovered, peak worker RSS " in footer
    assert "ran in more than one shard" not in done.stdout
    # The merged file is a report like any other.
    again = memstream("report", merged_path, "--top", "0")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == lines[: len(again.stdout.splitlines())]
    assert "shard2/gw" in page.read_text()


def test_labels_and_a_test_in_two_shards(tmp_path: Path) -> None:
    first, second = synthetic_report(8, workers=2, crash=False), synthetic_report(6, workers=2)
    paths = [tmp_path / "a" / "report.json", tmp_path / "b" / "report.json"]
    for path, report in zip(paths, (first, second), strict=True):
        path.parent.mkdir()
        path.write_text(json.dumps(report))
    merged_path = tmp_path / "merged.json"
    done = memstream(
        "report", *paths, "--label", "linux/py3.11", "--label", "mac", "--json", merged_path
    )
    assert done.returncode == 0, done.stderr
    merged = json.loads(merged_path.read_text())
    assert merged["run"]["tests"] == 8 + 7
    assert [s["label"] for s in merged["run"]["shards"]] == ["linux/py3.11", "mac"]
    assert {w["id"] for w in merged["workers"]} == {
        "linux/py3.11/gw0",
        "linux/py3.11/gw1",
        "mac/gw0",
        "mac/gw1",
    }
    # tests/test_0.py::test_0 ... test_5 ran in both: listed, each under its own worker.
    assert (
        "memstream: 6 tests ran in more than one shard (each is listed under its own worker):"
        in (done.stdout)
    )
    assert "  tests/test_0.py::test_0 (linux/py3.11, mac)" in done.stdout.splitlines()
    assert sum(t["nodeid"] == "tests/test_0.py::test_0" for t in merged["tests"]) == 2
    assert "memstream: worker mac/gw1 crashed while running tests/test_boom.py::test_oom" in (
        done.stdout
    )

    wrong = memstream("report", *paths, "--label", "only-one")
    assert wrong.returncode == 4
    assert "1 --label for 2 files: give one per file" in wrong.stderr


def test_a_broken_shard_is_one_line_and_the_others_merge(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(synthetic_report(10, crash=False)))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(synthetic_report(10))[:500])
    merged_path = tmp_path / "merged.json"
    base = tmp_path / "base.json"
    done = memstream("report", good, broken, "--json", merged_path, "--save-baseline", base)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        f"memstream report: {broken}: the JSON ends early: the file is truncated (half-written?)"
    )
    assert "memstream: top 5 tests by memory growth" in done.stdout
    merged = json.loads(merged_path.read_text())
    assert merged["run"]["tests"] == 10
    assert merged["run"]["complete"] is False
    assert merged["run"]["stopped"].startswith("shard2: not read: the JSON ends early")
    assert "INCOMPLETE run (shard2: not read: " in done.stdout
    # Nor is a baseline made of a run that is not whole.
    assert not base.exists()
    assert "baseline" in done.stderr.splitlines()[1]
    assert "not saved: the run is not complete" in done.stderr

    nothing = memstream("report", broken, tmp_path / "missing.json")
    assert nothing.returncode == 2
    assert nothing.stdout == ""
    assert len(nothing.stderr.splitlines()) == 2


def test_a_merged_baseline_and_a_named_one(tmp_path: Path) -> None:
    first, second = synthetic_report(5, crash=False), synthetic_report(10, crash=False)
    paths = [tmp_path / "1.json", tmp_path / "2.json"]
    for path, report in zip(paths, (first, second), strict=True):
        path.write_text(json.dumps(report))
    base = tmp_path / "out" / "base.json"
    for n in range(1, 4):
        done = memstream("report", *paths, "--save-baseline", base, "--baseline-runs", "2")
        assert done.returncode == 0, done.stderr
        assert f"memstream: baseline saved to {base} ({min(n, 2)} of at most 2 runs)" in (
            done.stdout
        )
    saved = json.loads(base.read_text())
    assert saved["schema"] == "pytest-memstream-baseline/2"
    assert len(saved["runs"]) == 2
    assert len(saved["tests"]) == 10  # the five in both shards once, at their largest growth

    project = tmp_path / "project"
    (project / ".pytest_cache").mkdir(parents=True)
    named = memstream("report", *paths, "--save-baseline", "nightly", cwd=project)
    assert named.returncode == 0, named.stderr
    stored = project / ".pytest_cache" / "v" / "memstream" / "baselines" / "nightly"
    assert json.loads(stored.read_text())["tests"] == {
        nodeid: {name: values[-1:] for name, values in figures.items()}
        for nodeid, figures in saved["tests"].items()
    }
    nowhere = memstream("report", *paths, "--save-baseline", "nightly", cwd=tmp_path / "out")
    assert nowhere.returncode == 2
    assert "no .pytest_cache at or above" in nowhere.stderr
