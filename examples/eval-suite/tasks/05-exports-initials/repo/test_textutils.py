import unittest

from textutils import initials, shout


class TextTest(unittest.TestCase):
    def test_initials(self):
        self.assertEqual(initials("Ada Lovelace"), "A.L.")
        self.assertEqual(initials("grace brewster hopper"), "G.B.H.")

    def test_shout(self):
        self.assertEqual(shout("hi"), "HI!")
