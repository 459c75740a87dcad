"""Where the JSON, HTML and baseline files go: through symlinks, never over a FIFO or a
device, with the usual mode; a path that cannot be written is a usage error at once."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

OUTPUTS = ("json", "html", "save")


@pytest.fixture(autouse=True)
def one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A timeout: a writer that opened a FIFO would wait for a reader forever.
    return pytester.runpytest_subprocess("--memstream", "-p", "no:randomly", *args, timeout=120)


def leftovers(*directories: Path) -> list[str]:
    return [p.name for d in directories for p in d.iterdir() if p.name.endswith(".tmp")]


def test_a_symlink_is_followed_and_its_target_written_in_place(
    pytester: pytest.Pytester,
) -> None:
    real = pytester.mkdir("real")
    for kind in OUTPUTS:
        (pytester.path / f"{kind}.json").symlink_to(f"real/{kind}-target.json")
    result = run(
        pytester,
        "--memstream-json=json.json",
        "--memstream-html=html.json",
        "--memstream-save=save.json",
    )
    assert result.ret == pytest.ExitCode.OK
    for kind in OUTPUTS:
        link = pytester.path / f"{kind}.json"
        assert link.is_symlink(), kind
        assert os.readlink(link) == f"real/{kind}-target.json"
        assert (real / f"{kind}-target.json").stat().st_size > 0, kind
    assert json.loads((real / "json-target.json").read_text())["schema"] == "pytest-memstream/2"
    assert json.loads((real / "save-target.json").read_text())["tests"]
    assert leftovers(pytester.path, real) == []
    result.stdout.fnmatch_lines(["memstream: JSON report written to */json.json"])


def test_a_fifo_is_neither_opened_nor_replaced(pytester: pytest.Pytester) -> None:
    for kind in OUTPUTS:
        os.mkfifo(pytester.path / f"{kind}-fifo.json")
    result = run(
        pytester,
        "--memstream-json=json-fifo.json",
        "--memstream-html=html-fifo.json",
        "--memstream-save=save-fifo.json",
    )
    assert result.ret == pytest.ExitCode.OK  # a report is a nicety: the outcome stands
    for kind in OUTPUTS:
        assert stat.S_ISFIFO((pytester.path / f"{kind}-fifo.json").lstat().st_mode), kind
    result.stdout.fnmatch_lines(
        [
            f"memstream: warning: could not write the JSON report: {pytester.path}/json-fifo.json "
            "is a FIFO: left as it is",
            f"memstream: warning: could not write the HTML report: {pytester.path}/html-fifo.json "
            "is a FIFO: left as it is",
            f"memstream: warning: could not save the baseline to {pytester.path}/save-fifo.json: "
            f"{pytester.path}/save-fifo.json is a FIFO: left as it is",
        ]
    )
    assert leftovers(pytester.path) == []


@pytest.fixture
def dev_full() -> Iterator[Path]:
    """/dev/full, put back as it was if the test replaced it (as root, a rename can)."""
    path = Path("/dev/full")
    if not path.is_char_device():
        pytest.skip("needs /dev/full")
    before = path.stat()
    yield path
    if not path.is_char_device():
        path.unlink()
        os.mknod(path, stat.S_IFCHR, before.st_rdev)
        path.chmod(stat.S_IMODE(before.st_mode))  # mknod's mode is cut by the umask


def test_a_device_is_not_replaced(pytester: pytest.Pytester, dev_full: Path) -> None:
    before = dev_full.stat()
    result = run(pytester, f"--memstream-json={dev_full}")
    after = dev_full.stat()
    assert stat.S_ISCHR(after.st_mode)
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["memstream: warning: could not write the JSON report: /dev/full is a character device*"]
    )
    assert leftovers(dev_full.parent) == []


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)  # inherited by the pytest subprocess
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_027")
def test_reports_get_the_usual_mode(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        "--memstream-json=out/run.json",
        "--memstream-html=out/run.html",
        "--memstream-save=out/base.json",
    )
    assert result.ret == pytest.ExitCode.OK
    for name in ("run.json", "run.html", "base.json"):
        mode = stat.S_IMODE((pytester.path / "out" / name).stat().st_mode)
        assert mode == 0o666 & ~0o027, (name, oct(mode))


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("json", "a_directory", "it is a directory"),
        ("json", "", "expected a file path"),
        ("html", "blocker/page.html", "*/blocker is not a directory, so the file cannot be*"),
        ("save", "blocker/deeper/base.json", "*/blocker is not a directory*"),
        ("json", "to_a_directory", "it is a directory (the target of its symlink, *)"),
    ],
)
def test_an_unusable_path_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester, flag: str, value: str, reason: str
) -> None:
    pytester.mkdir("a_directory")
    (pytester.path / "to_a_directory").symlink_to("a_directory")
    (pytester.path / "blocker").write_text("a file where a directory should be")
    result = run(pytester, f"--memstream-{flag}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: memstream: --memstream-{flag} got {value!r}*{reason}"])
    assert "collected" not in result.stdout.str()
    assert ".tmp" not in result.stderr.str()


def test_an_unusable_ini_path_names_the_key_and_the_file(pytester: pytest.Pytester) -> None:
    pytester.mkdir("out")
    ini = pytester.makeini("[pytest]\nmemstream_html = out\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: memstream: ini key memstream_html in {ini} got 'out': it is a directory"]
    )


def test_another_users_symlink_in_a_shared_directory_is_not_followed(
    pytester: pytest.Pytester,
) -> None:
    # What the kernel's protected_symlinks does for open(): a run as root must not write
    # through a link that someone else planted in /tmp.
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the link to another user")
    shared = pytester.mkdir("shared")
    shared.chmod(0o1777)
    victim = pytester.path / "victim.txt"
    victim.write_text("precious")
    link = shared / "report.json"
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    result = run(pytester, f"--memstream-json={link}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*another user's symlink in a shared directory: not followed*"])
    assert victim.read_text() == "precious"
    assert link.is_symlink()
