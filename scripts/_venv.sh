# Sourced by the scripts: create or reuse .venv and install this project into it.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEMSTREAM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "scripts: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi
stamp="$VENV/.memstream-installed"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)${1:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "scripts: installing pytest-memstream${1:+[$1]} into $VENV" >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT${1:+[$1]}" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$VENV/bin/python" -c "import pytest_memstream, zmq, msgpack, psutil" 
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
