import pytest

MiB = 1 << 20


def load(size: int) -> bytes:
    return b"\x01" * size  # touches every page, as reading a file into memory does


def test_load_big_file():
    data = load(300 * MiB)
    assert len(data) == 300 * MiB


@pytest.mark.parametrize("size_mb", [5, 20, 80])
def test_parse_chunks(size_mb):
    chunks = [load(MiB) for _ in range(size_mb)]
    assert sum(map(len, chunks)) == size_mb * MiB


def test_short_spike():
    # 250 MiB that live for a few milliseconds: only the kernel's high-water mark sees them.
    assert len(load(250 * MiB)) > 0
