from inventory import Stock
from inventory.report import report


def test_report_lists_skus_in_order():
    stock = Stock()
    stock.add("pear", 12)
    stock.add("apple", 3)
    assert report(stock) == "apple            3\npear            12"
