"""A plain-text stock report."""


def report(stock):
    """One line per SKU: the SKU, then its units, right-aligned."""
    return "\n".join(f"{sku:<12}{stock.quantity(sku):>6}" for sku in stock.skus())
