"""``python -m pytest_memstream.cli``: the ``memstream`` command without its script."""

from __future__ import annotations

import sys

from pytest_memstream.cli import main

sys.exit(main())
