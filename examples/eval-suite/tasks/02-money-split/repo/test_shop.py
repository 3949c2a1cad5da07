import unittest

from shop import format_price, split_bill


class ShopTest(unittest.TestCase):
    def test_split_bill(self):
        self.assertEqual(split_bill(10.00, 3), [3.34, 3.33, 3.33])
        self.assertEqual(split_bill(0.05, 2), [0.03, 0.02])
        self.assertEqual(split_bill(9.00, 3), [3.00, 3.00, 3.00])

    def test_format_price(self):
        self.assertEqual(format_price(3.5), "$3.50")
