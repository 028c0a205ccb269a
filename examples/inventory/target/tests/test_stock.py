import pytest

from inventory import OutOfStock, Stock


def test_add_and_remove():
    stock = Stock()
    stock.add("apple", 5)
    stock.remove("apple", 2)
    assert stock.quantity("apple") == 3


def test_unknown_sku_has_none():
    assert Stock().quantity("pear") == 0


def test_removing_too_many_is_refused():
    stock = Stock()
    stock.add("apple", 1)
    with pytest.raises(OutOfStock):
        stock.remove("apple", 2)
    assert stock.quantity("apple") == 1
