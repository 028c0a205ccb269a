import pytest

from calc.ops import add, divide, multiply, subtract


def test_add():
    assert add(2, 3) == 5


def test_subtract():
    assert subtract(5, 3) == 2


def test_multiply():
    assert multiply(4, 2.5) == 10


def test_divide():
    assert divide(7, 2) == 3.5


@pytest.mark.parametrize("a,b,expected", [(1, 1, 2), (-1, 1, 0), (0.5, 0.25, 0.75)])
def test_add_many(a, b, expected):
    assert add(a, b) == expected


def test_divide_by_zero_message():
    """A known bug, tracked separately: this test fails before any phase runs."""
    with pytest.raises(ValueError, match="cannot divide by zero"):
        divide(1, 0)
