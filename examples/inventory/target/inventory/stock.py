"""Stock levels per SKU."""


class OutOfStock(Exception):
    """Raised when more units are removed than are in stock."""


class Stock:
    """Units in stock, per SKU."""

    def __init__(self):
        self._units = {}

    def add(self, sku, units):
        """Receive ``units`` of ``sku``."""
        if units <= 0:
            raise ValueError("units must be positive")
        self._units[sku] = self._units.get(sku, 0) + units

    def remove(self, sku, units):
        """Ship ``units`` of ``sku``; OutOfStock if there are fewer."""
        if units > self.quantity(sku):
            raise OutOfStock(f"{sku}: {self.quantity(sku)} in stock, {units} asked")
        self._units[sku] -= units

    def quantity(self, sku):
        """Units of ``sku`` in stock (0 for an unknown SKU)."""
        return self._units.get(sku, 0)

    def skus(self):
        """Every SKU ever received, sorted."""
        return sorted(self._units)
