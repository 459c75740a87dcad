import time

import pytest


@pytest.mark.parametrize("n", range(300))
def test_quick(n):
    assert n >= 0


@pytest.mark.parametrize("n", range(20))
def test_a_little_slow(n):
    time.sleep(0.05)


def test_climbs_slowly():
    # Grows for about two seconds: watch it climb in `memstream watch`.
    held = []
    for _ in range(40):
        held.append(b"c" * (10 << 20))
        time.sleep(0.05)
