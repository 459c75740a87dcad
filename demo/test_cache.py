import functools

MiB = 1 << 20


@functools.cache
def expensive_table(n: int) -> bytes:
    return bytes([n % 251]) * (60 * MiB)


def test_warms_a_cache():
    # The cache outlives the test: this memory is *kept*.
    assert expensive_table(7)[0] == 7


class TestModel:
    def test_fit(self, model):
        assert len(model) == 120 * MiB

    def test_predict(self, model):
        assert model[:1] == b"m"


import pytest  # noqa: E402


@pytest.fixture(scope="class")
def model():
    # A fixture's cost lands in the setup phase of the first test that needs it.
    return b"m" * (120 * MiB)
