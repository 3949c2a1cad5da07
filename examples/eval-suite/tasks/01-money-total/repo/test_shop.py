import unittest

from shop import format_price, total


class ShopTest(unittest.TestCase):
    def test_total(self):
        self.assertEqual(total([0.10, 0.20]), 0.30)
        self.assertEqual(total([19.99, 5.01, 0.10]), 25.10)
        self.assertEqual(total([]), 0)

    def test_format_price(self):
        self.assertEqual(format_price(3.5), "$3.50")
