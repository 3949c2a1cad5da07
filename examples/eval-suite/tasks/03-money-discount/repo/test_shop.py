import unittest

from shop import apply_discount, format_price


class ShopTest(unittest.TestCase):
    def test_apply_discount(self):
        self.assertEqual(apply_discount(19.99, 15), 16.99)
        self.assertEqual(apply_discount(0.30, 10), 0.27)
        self.assertEqual(apply_discount(10.00, 0), 10.00)

    def test_format_price(self):
        self.assertEqual(format_price(3.5), "$3.50")
