# Sourced by scripts/test: a smoke run on the oldest Python pyproject.toml allows, with the
# oldest pytest and pytest-xdist it supports, and on the newest Python here with the newest
# of both, each in a venv of its own (.venv-py3.10, made and reused as .venv is): a plain
# run, -n 2 runs, crashed workers, the plugin off, the protocol, limits, JUnit properties
# and scheduling by memory.  About a minute each once the venv exists.  A Python that
# pyenv does not have is skipped, and said so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SMOKE_PYTHONS=(3.10 3.13)
SMOKE_TESTS=(
  tests/test_protocol.py
  tests/test_measure.py::test_single_process
  tests/test_measure.py::test_xdist
  tests/test_faults.py::test_crashed_worker_is_a_finding
  tests/test_off.py
  tests/test_limits.py::test_failure_message_gives_limit_figure_phase_and_phases
  tests/test_junit.py
  tests/test_schedule.py::test_two_hungry_tests_never_overlap_when_the_budget_fits_one
)
# The oldest of each that pyproject.toml allows (pytest>=8; pytest-xdist 3.x).
OLDEST=(pytest==8.0.2 pytest-xdist==3.0.2)
shopt -s nullglob
for version in "${SMOKE_PYTHONS[@]}"; do
  found=("${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/python)
  if [ ${#found[@]} -eq 0 ]; then
    echo "== smoke on Python $version: skipped, pyenv has no Python $version here" >&2
    continue
  fi
  interpreter="$(printf '%s\n' "${found[@]}" | sort -V | tail -n 1)"
  echo "== smoke on Python $version ($interpreter; MEMSTREAM_NO_SMOKE=1 leaves it out)"
  (
    export MEMSTREAM_VENV="$PWD/.venv-py$version" PYTHON="$interpreter"
    source scripts/_venv.sh test
    if [ "$version" = "${SMOKE_PYTHONS[0]}" ]; then
      python -m pip install -q "${OLDEST[@]}" >"$MEMSTREAM_VENV/oldest.log" 2>&1 \
        || { cat "$MEMSTREAM_VENV/oldest.log" >&2; exit 1; }
    fi
    python -c 'import pytest, xdist; print(f"   pytest {pytest.__version__}, pytest-xdist {xdist.__version__}")'
    python -m pytest -q -p no:randomly "${SMOKE_TESTS[@]}"
  )
done
