import unittest

from textutils import shout, slugify


class TextTest(unittest.TestCase):
    def test_slugify(self):
        self.assertEqual(slugify("Hello, World!"), "hello-world")
        self.assertEqual(slugify("  a--b  c "), "a-b-c")

    def test_shout(self):
        self.assertEqual(shout("hi"), "HI!")
