import unittest

from textutils import shout, truncate


class TextTest(unittest.TestCase):
    def test_truncate(self):
        self.assertEqual(truncate("hello world", 8), "hello w…")
        self.assertEqual(truncate("short", 8), "short")

    def test_shout(self):
        self.assertEqual(shout("hi"), "HI!")
