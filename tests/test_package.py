"""What the installed package says about itself (its metadata, from pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import distribution


def test_metadata_says_where_peaks_are_exact_and_what_it_installs() -> None:
    meta = distribution("pytest-memstream")
    summary = meta.metadata["Summary"]
    assert "exact per-phase peaks on Linux" in summary
    assert "sampled peaks on other systems" in summary
    assert meta.metadata["Requires-Python"] == ">=3.10"
    assert "Framework :: Pytest" in meta.metadata.get_all("Classifier", [])
    entry_points = {(e.group, e.name): e.value for e in meta.entry_points}
    assert entry_points[("pytest11", "memstream")] == "pytest_memstream.plugin"
    assert entry_points[("console_scripts", "memstream")] == "pytest_memstream.cli:main"
