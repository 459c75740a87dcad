"""The test suites the benchmarks run, written into a fresh directory each time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20

TRIVIAL_MODULES = 20
TRIVIAL_PER_MODULE = 100
MIXED_PLAIN = 200
MIXED_SLEEPERS = 20
SLEEP = 0.01


@dataclass(frozen=True)
class MemoryTest:
    """One memory test of the mixed suite and the growth it should show."""

    name: str
    size: int
    what: str
    #: The phase the memory is taken in: a fixture allocates in ``setup``.
    phase: str = "call"


#: Every allocation is ``b"x" * n``: it writes every byte, so every page is resident.
#: (``bytearray(n)`` would map zeroed pages that never become resident.)
MEMORY_TESTS = (
    MemoryTest("test_hold_5mb", 5 * MiB, "holds 5 MiB for the test"),
    MemoryTest("test_hold_50mb", 50 * MiB, "holds 50 MiB for the test"),
    MemoryTest("test_hold_200mb", 200 * MiB, "holds 200 MiB for the test"),
    MemoryTest("test_hold_500mb", 500 * MiB, "holds 500 MiB for the test"),
    MemoryTest("test_spike_300mb", 300 * MiB, "300 MiB spike, freed at once"),
    MemoryTest("test_spikes_3x100mb", 100 * MiB, "three 100 MiB spikes in a row"),
    MemoryTest("test_leak_50mb", 50 * MiB, "leaks 50 MiB into a module global"),
    MemoryTest("test_fixture_100mb", 100 * MiB, "a fixture holds 100 MiB", "setup"),
)

_MEMORY_MODULE = f"""\
import pytest

MiB = {MiB}
_LEAKED = []


def test_hold_5mb():
    data = b"x" * (5 * MiB)
    assert len(data) == 5 * MiB


def test_hold_50mb():
    data = b"x" * (50 * MiB)
    assert len(data) == 50 * MiB


def test_hold_200mb():
    data = b"x" * (200 * MiB)
    assert len(data) == 200 * MiB


def test_hold_500mb():
    data = b"x" * (500 * MiB)
    assert len(data) == 500 * MiB


def test_spike_300mb():
    # Lives only as long as len() takes: a few milliseconds at most.
    assert len(b"x" * (300 * MiB)) == 300 * MiB


def test_spikes_3x100mb():
    for _ in range(3):
        assert len(b"x" * (100 * MiB)) == 100 * MiB


def test_leak_50mb():
    _LEAKED.append(b"x" * (50 * MiB))


@pytest.fixture
def hundred_mb():
    data = b"x" * (100 * MiB)
    yield data
    del data


def test_fixture_100mb(hundred_mb):
    assert len(hundred_mb) == 100 * MiB
"""


def _plain_module(count: int, prefix: str = "test") -> str:
    return "\n\n".join(f"def {prefix}_{i:04d}():\n    pass\n" for i in range(count))


def _write_ini(root: Path) -> None:
    # Its own rootdir and ini file, so that no ini file above it (this project's
    # addopts) changes what the suite runs.
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")


def write_trivial(root: Path) -> Path:
    """2,000 tests that do nothing: the per-test cost of a plugin dominates."""
    root.mkdir(parents=True, exist_ok=True)
    _write_ini(root)
    for module in range(TRIVIAL_MODULES):
        text = _plain_module(TRIVIAL_PER_MODULE)
        (root / f"test_trivial_{module:02d}.py").write_text(text, encoding="utf-8")
    return root


def write_mixed(root: Path) -> Path:
    """Memory tests of 5-500 MiB, short spikes, a leak, short sleeps, and plain tests."""
    root.mkdir(parents=True, exist_ok=True)
    _write_ini(root)
    (root / "test_memory.py").write_text(_MEMORY_MODULE, encoding="utf-8")
    sleepers = "import time\n\n\n" + "\n\n".join(
        f"def test_sleep_{i:02d}():\n    time.sleep({SLEEP})\n" for i in range(MIXED_SLEEPERS)
    )
    (root / "test_sleep.py").write_text(sleepers, encoding="utf-8")
    (root / "test_plain.py").write_text(_plain_module(MIXED_PLAIN), encoding="utf-8")
    return root


def trivial_count() -> int:
    return TRIVIAL_MODULES * TRIVIAL_PER_MODULE


def mixed_count() -> int:
    return len(MEMORY_TESTS) + MIXED_SLEEPERS + MIXED_PLAIN


#: A real suite: numpy's own tests of these packages, as installed with numpy.
NUMPY_PACKAGES = ("numpy.linalg", "numpy.fft", "numpy.random")


def numpy_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("numpy", "hypothesis"))


def write_numpy(root: Path) -> Path:
    """A directory to run numpy's tests from (``NUMPY_ARGS``): only an ini file."""
    root.mkdir(parents=True, exist_ok=True)
    _write_ini(root)
    return root


NUMPY_ARGS = ("--pyargs", *NUMPY_PACKAGES)
