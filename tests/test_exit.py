"""What the plugin leaves behind when a measured run's process exits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Runs pytest in a fresh process, then does what the interpreter does first at exit: it
# lets go of every module and collects.  Our modules are loaded by pytest's assertion
# rewriter, as an installed plugin's are (an editable install's are not: hence the -p
# below), and the rewriter holds the session's config: anything
# of ours kept beyond the modules (os.register_at_fork keeps its hooks to the very end)
# keeps the whole session alive through that pass, and every process paid one more full
# collection over its heap at exit.
AT_EXIT = """
import gc, sys, threading, weakref
import pytest

class Grab:
    ref = None
    def pytest_configure(self, config):
        Grab.ref = weakref.ref(config)

args = ["-q", "-p", "no:cacheprovider", "-p", "no:xdist", *sys.argv[1:]]
code = pytest.main(args, plugins=[Grab()])
assert code == 0, code
# A thread of ours still running would keep our modules alive for another reason.
assert threading.active_count() == 1, threading.enumerate()
ref = Grab.ref
del Grab, pytest
for name in list(sys.modules):
    if name not in ("sys", "builtins", "gc", "threading", "weakref"):
        del sys.modules[name]
gc.collect()
print("config alive" if ref() is not None else "config freed")
"""


PLUGIN = ["-p", "no:memstream", "-p", "pytest_memstream.plugin"]


@pytest.mark.parametrize("args", [[*PLUGIN, "--memstream"], PLUGIN], ids=["measured", "off"])
def test_the_session_is_freed_with_the_modules_at_exit(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(AT_EXIT), *args, "test_one.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.splitlines()[-1] == "config freed", done.stdout + done.stderr
